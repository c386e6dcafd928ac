/* A Guest kernel with a user-mode program (test_usermode.py).  It builds its
 * own GDT and page tables, copies the program in um_user.S to a page mapped
 * at UCODE, and irets to it at privilege level 3.  The program comes back
 * only through `int $0x80`, a DPL 3 trap gate (the direct trap of abi §5.3),
 * and through page faults on UDATA, which the kernel services by mapping
 * pages from a small pool, telling the Host with SET_PMD and SET_PTE as
 * Linux's set_pmd and set_pte_at did.  Every frame is checked for what a
 * trap from user mode must look like; the results are printed at exit. */
#include "lguest.h"
#include "um_user.h"

#define PTE_P	0x1
#define PTE_RW	0x2
#define PTE_US	0x4
#define PF_WRITE 2
#define PF_USER	4
#define POOL	6

static unsigned long gdt[32][2];
static u32 pgdir[1024] __attribute__((aligned(4096)));
static u32 kernel_pt[1024] __attribute__((aligned(4096)));
static u32 code_pt[1024] __attribute__((aligned(4096)));
static u32 stack_pt[1024] __attribute__((aligned(4096)));
static u8 pool[POOL][4096] __attribute__((aligned(4096)));
static unsigned pool_used;
static char kstack[4096] __attribute__((aligned(4096)));
#define KSTACK_TOP ((unsigned long)kstack + sizeof(kstack))

extern const char user_prog[], user_prog_end[];
void enter_user(unsigned long eip, unsigned long esp) __attribute__((noreturn));

static unsigned syscalls, frames_ok, faults, first_eflags, fault_eflags;
static struct { unsigned cr2, err, eip; } fault_log[4];

static void *alloc_page(void)
{
	if (pool_used == POOL)
		lguest_crash("out of pages");
	return memset(pool[pool_used++], 0, 4096);
}

#include "checkpoint.h"

static int in_user_code(unsigned long eip)
{
	return eip >= UCODE && eip < UCODE + (user_prog_end - user_prog);
}

/* What any trap from user mode must look like: the user's selectors, the
 * frame at the very top of the SET_STACK stack, interrupts on in eflags. */
static int user_frame_ok(struct trapframe *tf)
{
	return tf->cs == USER_CS && tf->ss == USER_DS && tf->ds == USER_DS && tf->es == USER_DS
		&& (unsigned long)(tf + 1) == KSTACK_TOP && (tf->eflags & X86_EFLAGS_IF)
		&& in_user_code(tf->eip);
}

/* The user's address as the kernel sees it: walk our own tables to the page. */
static u32 *user_word(unsigned long va, u32 *pte_out)
{
	u32 pgd = pgdir[va >> 22], pte;

	if (!(pgd & PTE_P))
		return 0;
	pte = ((u32 *)__va(pgd & ~0xFFF))[(va >> 12) & 1023];
	*pte_out = pte;
	if (!(pte & PTE_P))
		return 0;
	return (u32 *)__va((pte & ~0xFFF) | (va & 0xFFF));
}

static void __attribute__((noreturn)) sys_exit(unsigned status)
{
	unsigned i;

	printk("exit status %u after %u syscalls, %u frames ok\n", status, syscalls, frames_ok);
	printk("eflags at the first syscall %x, at the first fault %x\n", first_eflags, fault_eflags);
	for (i = 0; i < faults; i++)
		printk("fault cr2=%x err=%x eip=%x\n", fault_log[i].cr2, fault_log[i].err,
		       fault_log[i].eip);
	lguest_crash("Power down");
}

static void syscall(struct trapframe *tf)
{
	u32 pte, *p;

	if (syscalls++ == 0)
		first_eflags = tf->eflags & ~0x8D5;	/* less the arithmetic flags */
	/* A trap gate leaves the virtual interrupt flag alone; %esi and %edi
	 * hold the user's %esp and the address after its `int $0x80`. */
	if (user_frame_ok(tf) && tf->trapnum == 0x80 && tf->errcode == 0
	    && lguest_data.irq_enabled == X86_EFLAGS_IF
	    && tf->esp == tf->esi && tf->eip == tf->edi
	    && *(const u16 *)(tf->eip - 2) == 0x80CD)
		frames_ok++;
	else
		printk("bad syscall frame: eip=%x cs=%x eflags=%x esp=%x ss=%x ds=%x es=%x "
		       "esi=%x edi=%x irq_enabled=%x frame_end=%x\n", tf->eip, tf->cs, tf->eflags,
		       tf->esp, tf->ss, tf->ds, tf->es, tf->esi, tf->edi,
		       (unsigned)lguest_data.irq_enabled, (unsigned)(unsigned long)(tf + 1));

	switch (tf->eax) {
	case SYS_NOP:
		break;
	case SYS_WRITE:
		printk("write %u (%x)\n", tf->ebx, tf->ebx);
		break;
	case SYS_ADD:
		tf->eax = tf->ebx + tf->ecx;
		break;
	case SYS_EXIT:
		sys_exit(tf->ebx);
	case SYS_CHECK:
		pte = 0;
		p = user_word(tf->ecx, &pte);
		tf->eax = p ? *p : 0xFFFFFFFF;
		printk("check %x: user read %x, kernel reads %x, pte flags %x\n", tf->ecx, tf->ebx,
		       tf->eax, pte & 0xFFF);
		break;
	case SYS_CHECKPOINT:
		checkpoint(tf->ebx);
		break;
	default:
		printk("bad syscall %u\n", tf->eax);
		tf->eax = 0xFFFFFFFF;
	}
}

/* A page fault from the user on UDATA: map a fresh page there (and its page
 * table if there is none yet), tell the Host, and return to try again. */
static void page_fault(struct trapframe *tf)
{
	unsigned long va = lguest_data.cr2;
	unsigned idx = va >> 22;
	u32 *pt, pte;
	u32 *page;

	/* An interrupt gate: the Host turned the virtual interrupt flag off. */
	if (!user_frame_ok(tf) || !(tf->errcode & PF_USER) || lguest_data.irq_enabled != 0) {
		printk("unexpected fault cr2=%x err=%x eip=%x cs=%x irq_enabled=%x\n",
		       (unsigned)va, tf->errcode, tf->eip, tf->cs, (unsigned)lguest_data.irq_enabled);
		lguest_crash("unexpected page fault");
	}
	/* Anywhere else (the kernel's own pages, say) the program dies. */
	if (va < UDATA || va >= UDATA + 0x2000 || faults == 4) {
		printk("segfault cr2=%x err=%x eip=%x\n", (unsigned)va, tf->errcode, tf->eip);
		sys_exit(139);
	}
	if (faults == 0)
		fault_eflags = tf->eflags & ~0x8D5;
	fault_log[faults].cr2 = va;
	fault_log[faults].err = tf->errcode;
	fault_log[faults].eip = tf->eip;
	faults++;

	if (!(pgdir[idx] & PTE_P)) {
		pt = alloc_page();
		pgdir[idx] = __pa(pt) | PTE_P | PTE_RW | PTE_US;
		hcall(LHCALL_SET_PMD, __pa(pgdir), idx, 0);
	}
	pt = __va(pgdir[idx] & ~0xFFF);
	page = alloc_page();
	page[1] = 0xFEED0000 | faults;		/* something for a read to find */
	pte = __pa(page) | PTE_P | PTE_RW | PTE_US;
	pt[(va >> 12) & 1023] = pte;
	hcall(LHCALL_SET_PTE, __pa(pgdir), va & ~0xFFF, pte);
}

int main(void)
{
	unsigned i;
	void *code, *stack;

	lguest_init();

	gdt[12][0] = 0x0000FFFF; gdt[12][1] = 0x00CFBB00;	/* kernel code, DPL 1 */
	gdt[13][0] = 0x0000FFFF; gdt[13][1] = 0x00CFB300;	/* kernel data, DPL 1 */
	gdt[14][0] = 0x0000FFFF; gdt[14][1] = 0x00CFFB00;	/* user code, DPL 3 */
	gdt[15][0] = 0x0000FFFF; gdt[15][1] = 0x00CFF300;	/* user data, DPL 3 */
	hcall(LHCALL_LOAD_GDT, __pa(gdt), 32, 0);

	/* The kernel's linear map: 4 MiB at PAGE_OFFSET, supervisor only. */
	for (i = 0; i < 1024; i++)
		kernel_pt[i] = (i << 12) | PTE_P | PTE_RW;
	pgdir[PAGE_OFFSET >> 22] = __pa(kernel_pt) | PTE_P | PTE_RW;

	/* The user's code page (read-only) and stack page. */
	code = alloc_page();
	memcpy(code, user_prog, user_prog_end - user_prog);
	code_pt[(UCODE >> 12) & 1023] = __pa(code) | PTE_P | PTE_US;
	pgdir[UCODE >> 22] = __pa(code_pt) | PTE_P | PTE_RW | PTE_US;
	stack = alloc_page();
	stack_pt[((USTACK_TOP - 4096) >> 12) & 1023] = __pa(stack) | PTE_P | PTE_RW | PTE_US;
	pgdir[(USTACK_TOP - 4096) >> 22] = __pa(stack_pt) | PTE_P | PTE_RW | PTE_US;

	/* Switch, and since our kernel mappings differ from the Launcher's
	 * (theirs let the user in), flush the kernel part too: the Host
	 * keeps a recycled shadow's kernel entries, as 2.6.23 did. */
	hcall(LHCALL_NEW_PGTABLE, __pa(pgdir), 0, 0);
	hcall(LHCALL_FLUSH_TLB, 1, 0, 0);
	hcall(LHCALL_SET_STACK, __KERNEL_DS, KSTACK_TOP, 1);
	install_trap(0x80, syscall, GATE_TRAP, 3);
	install_trap(14, page_fault, GATE_INTERRUPT, 0);
	printk("user program %u bytes\n", (unsigned)(user_prog_end - user_prog));
	enter_user(UCODE, USTACK_TOP);
}
