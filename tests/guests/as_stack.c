/* The assists read the frames they pop through the Guest's page tables,
 * checking as the CPU would (test_assist.py).  The Guest takes page tables
 * of its own where one page is supervisor-only and one is not mapped, goes
 * to user mode with a far return, and then irets from user mode with %esp
 * in each of those pages: both must be page faults, and the frame in the
 * supervisor page must not be used. */
#include "lguest.h"

static unsigned long gdt[32][2];
static unsigned long pgd[1024] __attribute__((aligned(4096)));
static unsigned long pte[1024] __attribute__((aligned(4096)));
static char kstack[4096] __attribute__((aligned(4096)));
static char ustack[4096] __attribute__((aligned(4096)));
static unsigned long kpage[1024] __attribute__((aligned(4096)));
static char hole[4096] __attribute__((aligned(4096)));

extern char user_start[], at_iret_kernel_page[], at_iret_unmapped[], user_resume[];
extern char user_done[], at_lret_user[];
extern unsigned long kernel_page_frame, unmapped_frame;
void lret_to_user(unsigned long eip, unsigned long esp);

#define LABEL(x) printk("L " #x " %x\n", (unsigned)(unsigned long)(x))
#define PFN(p) (__pa(p) >> 12)

static void pf(struct trapframe *tf)
{
	printk("T vec=%u err=%x eip=%x cs=%x esp=%x ss=%x cr2=%x\n", tf->trapnum, tf->errcode,
	       tf->eip, tf->cs, tf->esp, tf->ss, (unsigned)lguest_data.cr2);
	if (tf->eip == (unsigned long)at_iret_kernel_page)
		tf->eip = (unsigned long)user_resume;
	else if (tf->eip == (unsigned long)at_iret_unmapped)
		tf->eip = (unsigned long)user_done;
	else
		lguest_crash("unexpected fault");
	tf->esp = (unsigned long)ustack + sizeof(ustack);
}

static void gp(struct trapframe *tf)
{
	printk("T vec=%u err=%x eip=%x cs=%x esp=%x ss=%x ebx=%x edx=%x esi=%x edi=%x\n",
	       tf->trapnum, tf->errcode, tf->eip, tf->cs, tf->esp, tf->ss, tf->ebx, tf->edx,
	       tf->esi, tf->edi);
	lguest_crash("Power down");
}

int main(void)
{
	unsigned i;

	lguest_init();
	gdt[12][0] = 0x0000FFFF; gdt[12][1] = 0x00CFBA00;
	gdt[13][0] = 0x0000FFFF; gdt[13][1] = 0x00CFB200;
	gdt[14][0] = 0x0000FFFF; gdt[14][1] = 0x00CFFA00;
	gdt[15][0] = 0x0000FFFF; gdt[15][1] = 0x00CFF200;
	hcall(LHCALL_LOAD_GDT, __pa(gdt), 32, 0);
	install_trap(13, gp, GATE_TRAP, 0);
	install_trap(14, pf, GATE_TRAP, 0);

	/* The first 4 MB of the linear map, all User, but for two pages. */
	for (i = 0; i < 1024; i++)
		pte[i] = i << 12 | 7;
	pte[PFN(kpage)] = PFN(kpage) << 12 | 3;
	pte[PFN(hole)] = 0;
	pgd[PAGE_OFFSET >> 22] = __pa(pte) | 7;
	hcall(LHCALL_NEW_PGTABLE, __pa(pgd), 0, 0);

	/* A frame the user may not read, which would take it back to ring 1. */
	kpage[1021] = (unsigned long)user_done;
	kpage[1022] = __KERNEL_CS;
	kpage[1023] = 0x202;
	kernel_page_frame = (unsigned long)&kpage[1021];
	unmapped_frame = (unsigned long)hole + 64;

	hcall(LHCALL_SET_STACK, __KERNEL_DS, (unsigned long)kstack + sizeof(kstack), 1);
	printk("L ustack_top %x\n", (unsigned)(unsigned long)(ustack + sizeof(ustack)));
	LABEL(kernel_page_frame); LABEL(unmapped_frame);
	LABEL(at_iret_kernel_page); LABEL(at_iret_unmapped); LABEL(user_done); LABEL(at_lret_user);
	lret_to_user((unsigned long)user_start, (unsigned long)ustack + sizeof(ustack) - 4);
	lguest_crash("lret_to_user returned");
}
