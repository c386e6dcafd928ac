/*M:900 The lguest-bench Guest.  One small kernel with one loop per benchmark,
 * chosen when it is built (-DMODE=..., -DN=ops per lap, -DLAPS=laps).  Before
 * the first lap and after each one it sends an empty DMA to key 0x2000, which
 * ends the Launcher's read(): the Launcher times the laps from those, so every
 * figure is "one lap / N", with the marker's own cost spread over N. :*/
#include "lguest.h"
#include "usermode.h"

#define MARK_KEY	0x2000
#define DMA_KEY		0x3000
#define M_HYPERCALL	1
#define M_ASYNC		2
#define M_PIO		3
#define M_PAGEFAULT	4
#define M_PTE		5
#define M_CTXSW		6
#define M_TIMER		7
#define M_DMAOUT	8
#define M_MEMLIN	9
#define M_MEMRAND	10
#define M_IRQ		11
#define M_SYSCALL	12
#define M_COW		13
#define M_TIMEACC	14
#define M_DEMAND	15
#define USER_MODE	(MODE == M_SYSCALL || MODE == M_COW)
#define IRQ_PLEASE	0x1000	/* a marker asking the Launcher for IRQ 1 */
#define IRQ_SEEN	0x1001	/* a marker from IRQ 1's handler */
#ifndef DELAY_NS
#define DELAY_NS	1000000	/* timer-accuracy: how far ahead each clock event is set */
#endif

#ifndef N
#define N 100
#endif
#ifndef LAPS
#define LAPS 5
#endif
#ifndef MEM_MB
#define MEM_MB 64
#endif
#ifndef BREAK
#define BREAK 0		/* 1: answer system calls wrongly, 2: map without copying (tests) */
#endif

static struct lguest_dma mark_dma, out_dma;
static volatile unsigned ticks;
static unsigned long pgd_a[1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned long pgd_b[1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned long kptes[4][1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned long uptes[1024] __attribute__((aligned(PAGE_SIZE)));
static char page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static volatile unsigned sink;

static void mark(unsigned tag)
{
	mark_dma.used_len = 0;
	mark_dma.len[0] = 0;
	mark_dma.addr[0] = tag;
	hcall(LHCALL_SEND_DMA, MARK_KEY, __pa(&mark_dma), 0);
}

static __attribute__((unused)) void skip_load(struct trapframe *tf)
{
	tf->eip += 2;			/* movl (%ecx),%eax */
}

static void timer_irq(struct trapframe *tf)
{
	(void)tf;
	ticks++;
}

static volatile unsigned irqs;

static void launcher_irq(struct trapframe *tf)
{
	(void)tf;
	irqs++;
#if MODE == M_IRQ
	mark(IRQ_SEEN);		/* the handler runs: the Launcher notes the time */
#endif
}

/*M:954 demand-fault: pages the shadow tables have not got yet.  Sixteen user pages at 4 MB,
 * present and accessed in the Guest's own tables; FLUSH_TLB(0) makes the Host drop every shadow
 * entry below PAGE_OFFSET, so each of the sixteen reads after it is a fault the Host resolves on
 * its own from the Guest's tables, which never see a trap.  On the direct backend the CPU walks
 * the Guest's tables itself and there is nothing to resolve. :*/
#if MODE == M_DEMAND
static char demand[16][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

static void demand_pages(void)
{
	for (unsigned k = 0; k < 16; k++) {
		demand[k][0] = (char)k;
		uptes[k] = __pa(demand[k]) | 0x67;	/* present, writable, user, accessed, dirty */
	}
}
#endif

/* Two page directories mapping the first 16 MB of the kernel (the image, its
 * stack and bss), one of them also a user page for SET_PTE to change. */
static __attribute__((unused)) void own_page_tables(void)
{
	for (unsigned t = 0; t < 4; t++) {
		for (unsigned i = 0; i < 1024; i++)
			kptes[t][i] = ((t * 1024 + i) << 12) | 0x63;
		pgd_a[(PAGE_OFFSET >> 22) + t] = __pa(kptes[t]) | 0x67;
		pgd_b[(PAGE_OFFSET >> 22) + t] = __pa(kptes[t]) | 0x67;
	}
	pgd_a[1] = __pa(uptes) | 0x67;
	hcall(LHCALL_NEW_PGTABLE, __pa(pgd_a), 0, 0);
}

/*M:955 pte-update and context-switch time one hypercall each, so nothing else may happen in
 * their laps: no shadow page table may still be missing a page the loop touches.  Before the first
 * marker, the user page SET_PTE changes is mapped and read once (so the Host really has a shadow
 * entry to rewrite), and for context-switch both directories are entered a few times and every
 * page of the kernel image read in each (the Host recycles a shadow root at random when a new
 * directory comes, so a later switch may take the other's root; four rounds make that vanishingly
 * unlikely to be left so). :*/
extern char _text[], _end[];

static __attribute__((unused)) void warm_shadows(void)
{
	uptes[0] = __pa(page) | 0x67;
	sink += *(volatile char *)0x00400000UL;
#if MODE == M_CTXSW
	for (int round = 0; round < 4; round++) {
		for (int which = 0; which < 2; which++) {
			hcall(LHCALL_NEW_PGTABLE, __pa(which ? pgd_a : pgd_b), 0, 0);
			for (char *p = _text; p < _end; p += PAGE_SIZE)
				sink += *(volatile char *)p;
			sink += *(volatile char *)((unsigned long)_end - 1);
		}
	}
#endif
}

/*M:951 The user-mode benchmarks (syscall and cow).  Their laps run in a
 * user program at privilege level 3, a few dozen bytes of assembly below that
 * the kernel copies into a page of its own and maps, read-only, at UCODE in
 * pgd_a's user page table.  The program counts its own laps and asks the
 * kernel for the markers with a system call, SYS_LAP; the kernel never runs
 * the main loop at all.  Every op checks its result, and a wrong one is a
 * SYS_BAD call that crashes the Guest with a message of its own, so the
 * Launcher, which accepts only "Power down", refuses the run.  SYS_EXIT
 * checks the counts: every system call answered, every store a fault. :*/
#define UCODE		0x00410000	/* the user program, read-only */
#define USTACK_TOP	0x00420000	/* its stack page is just below */
#define ORIG_VA		0x00430000	/* the shared original, read-only */
#define COW_VA		0x00440000	/* two pages sharing it, taking turns */
#define COW_FRAMES	4		/* fresh frames, handed out in turn */
#define SYS_NOT		0		/* eax = ~ebx: the system call timed */
#define SYS_LAP		1		/* a lap is over: send the marker */
#define SYS_EXIT	2		/* all laps are over */
#define SYS_BAD		3		/* a check failed: ebx says which */
#define UPTE(va)	uptes[((va) >> 12) & 1023]
#define PTE_RO		0x25		/* present, user, accessed */
#define PTE_RW		0x67		/* and writable, dirty */
#define STR(x)		#x
#define XSTR(x)		STR(x)

#if USER_MODE
static u32 ucode[1024] __attribute__((aligned(PAGE_SIZE)));
static u32 ustack[1024] __attribute__((aligned(PAGE_SIZE)));
static u32 orig[1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned answered, cow_faults, laps_done;
extern const char user_prog[], user_prog_end[];

static const char *const bad_why[] = {
	"bad check",
	"a system call returned the wrong answer",
	"a store to the copied page did not stick",
	"a store reached the shared original page",
	"the copied page is not a fresh copy of the original",
};

/* The user's pages: its code, its stack, and for cow the original page,
 * mapped read-only at ORIG_VA and at both COW_VA pages, as a fork leaves a
 * page its parent had written: shared, and read-only to both. */
static void user_pages(void)
{
	for (unsigned k = 0; k < 1024; k++)
		orig[k] = (k << 12) | 0xC0E;
	memcpy(ucode, user_prog, user_prog_end - user_prog);
	UPTE(UCODE) = __pa(ucode) | PTE_RO;
	UPTE(USTACK_TOP - PAGE_SIZE) = __pa(ustack) | PTE_RW;
	UPTE(ORIG_VA) = __pa(orig) | PTE_RO;
	UPTE(COW_VA) = __pa(orig) | PTE_RO;
	UPTE(COW_VA + PAGE_SIZE) = __pa(orig) | PTE_RO;
}

/* int $0x80 lands here through a DPL 3 trap gate: a direct trap, which on
 * hardware KVM never leaves the virtual machine. */
static void sys_call(struct trapframe *tf)
{
	if (tf->eax == SYS_NOT) {
		tf->eax = ~tf->ebx ^ (BREAK == 1);
		answered++;
	} else if (tf->eax == SYS_LAP) {
		mark(++laps_done);
	} else if (tf->eax == SYS_EXIT) {
		unsigned want = MODE == M_SYSCALL ? answered : cow_faults;
		if (want != (unsigned)N * LAPS || laps_done != LAPS) {
			printk("%u laps, %u system calls answered, %u copy-on-write faults\n",
			       laps_done, answered, cow_faults);
			lguest_crash("the user program did not do all its work");
		}
		lguest_crash("Power down");
	} else {
		printk("bad system call %u, %u (op %u)\n", tf->eax, tf->ebx, tf->esi);
		lguest_crash(tf->eax == SYS_BAD && tf->ebx < 5 ? bad_why[tf->ebx] : "bad system call");
	}
}

#endif

#if MODE == M_COW
static u32 cow_frames[COW_FRAMES][1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned next_frame;

/* A page, a word at a time (the runtime's memcpy goes a byte at a time). */
static void copy_page(void *to, const void *from)
{
	unsigned long n = PAGE_SIZE / 4;

	__asm__ __volatile__("rep movsl" : "+D"(to), "+S"(from), "+c"(n) : : "memory");
}

/*M:952 Copy-on-write, as a Guest kernel does it.  The user stored to a page
 * whose PTE is read-only; the Host found the Guest's own PTE forbids the
 * write and reflected the fault here, with cr2 in lguest_data.  We copy the
 * page the PTE maps into a fresh frame, point the PTE at the copy, writable,
 * and tell the Host with SET_PTE, as set_pte_at() did: the iret retries the
 * store, and it sticks.  The other page goes back to the original, read-only,
 * with a second SET_PTE, so the user's next store (there) faults again. :*/
static void cow_fault(struct trapframe *tf)
{
	unsigned long va = lguest_data.cr2 & ~(PAGE_SIZE - 1);
	u32 *frame = cow_frames[next_frame++ % COW_FRAMES];

	if ((tf->errcode & 6) != 6 || va - COW_VA > PAGE_SIZE || tf->cs != USER_CS) {
		printk("page fault at %x, error %x, eip %x\n", (unsigned)lguest_data.cr2,
		       tf->errcode, tf->eip);
		lguest_crash("unexpected page fault");
	}
	if (BREAK != 2)
		copy_page(frame, __va(UPTE(va) & ~(PAGE_SIZE - 1)));
	UPTE(va) = __pa(frame) | PTE_RW;
	hcall(LHCALL_SET_PTE, __pa(pgd_a), va, UPTE(va));
	UPTE(va ^ PAGE_SIZE) = __pa(orig) | PTE_RO;
	hcall(LHCALL_SET_PTE, __pa(pgd_a), va ^ PAGE_SIZE, UPTE(va ^ PAGE_SIZE));
	cow_faults++;
}
#endif

/*M:953 The user program.  %ebp counts laps, %esi ops.  syscall asks for ~op
 * and checks the answer.  cow stores to the two pages in turn, at a word that
 * moves with the op, then checks three things: the store reads back; the
 * original page does not have it; and the word stored by the op that last
 * had the same frame (COW_FRAMES ops back in a lap) is the original's again,
 * so the frame really was filled with a fresh copy. :*/
#if MODE == M_SYSCALL
#define USER_OP								\
	"1:	movl	$" XSTR(SYS_NOT) ", %eax\n"				\
	"	movl	%esi, %ebx\n"						\
	"	int	$0x80\n"						\
	"	notl	%eax\n"							\
	"	movl	$1, %ebx\n"						\
	"	cmpl	%esi, %eax\n"						\
	"	jne	9f\n"
#else
#define USER_OP								\
	"1:	movl	%esi, %ebx\n"						\
	"	andl	$1, %ebx\n"						\
	"	shll	$12, %ebx\n"						\
	"	addl	$" XSTR(COW_VA) ", %ebx\n"				\
	"	movl	%esi, %ecx\n"						\
	"	andl	$1023, %ecx\n"						\
	"	movl	%esi, %eax\n"						\
	"	orl	$0x80000000, %eax\n"					\
	"	movl	%eax, (%ebx,%ecx,4)\n"					\
	"	movl	%ebx, %edi\n"						\
	"	movl	$2, %ebx\n"						\
	"	cmpl	%eax, (%edi,%ecx,4)\n"					\
	"	jne	9f\n"							\
	"	movl	$3, %ebx\n"						\
	"	cmpl	%eax, " XSTR(ORIG_VA) "(,%ecx,4)\n"			\
	"	je	9f\n"							\
	"	addl	$" XSTR(COW_FRAMES) ", %ecx\n"				\
	"	andl	$1023, %ecx\n"						\
	"	movl	(%edi,%ecx,4), %edx\n"					\
	"	movl	$4, %ebx\n"						\
	"	cmpl	" XSTR(ORIG_VA) "(,%ecx,4), %edx\n"			\
	"	jne	9f\n"
#endif
#if USER_MODE
__asm__(".pushsection .rodata\n"
	".globl	user_prog, user_prog_end\n"
	"user_prog:\n"
	"	movl	$" XSTR(LAPS) ", %ebp\n"
	"2:	movl	$" XSTR(N) ", %esi\n"
	USER_OP
	"	decl	%esi\n"
	"	jnz	1b\n"
	"	movl	$" XSTR(SYS_LAP) ", %eax\n"
	"	int	$0x80\n"
	"	decl	%ebp\n"
	"	jnz	2b\n"
	"	movl	$" XSTR(SYS_EXIT) ", %eax\n"
	"	int	$0x80\n"
	"9:	movl	$" XSTR(SYS_BAD) ", %eax\n"
	"	int	$0x80\n"
	"	ud2\n"
	"user_prog_end:\n"
	".popsection");
#endif

static void one_op(unsigned i)
{
#if MODE == M_HYPERCALL
	(void)i;
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
#elif MODE == M_ASYNC
	unsigned slot = i % LHCALL_RING_SIZE;
	while (lguest_data.hcall_status[slot] != 0xFF)
		hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	lguest_data.hcalls[slot].eax = LHCALL_FLUSH_ASYNC;
	wmb();
	lguest_data.hcall_status[slot] = 0;
	if (slot == LHCALL_RING_SIZE - 1)
		hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);	/* one exit drains 64 */
#elif MODE == M_PIO
	unsigned char v;
	(void)i;
	__asm__ volatile("inb $0x80, %0" : "=a"(v));
	sink += v;
#elif MODE == M_PAGEFAULT
	unsigned long v;
	(void)i;
	__asm__ volatile("movl (%%ecx), %%eax" : "=a"(v) : "c"(0x00800000UL), "a"(0) : "memory");
	sink += v;
#elif MODE == M_PTE
	hcall(LHCALL_SET_PTE, __pa(pgd_a), 0x00400000UL, (__pa(page) + 0) | ((i & 1) ? 0x67 : 0x65));
#elif MODE == M_CTXSW
	hcall(LHCALL_NEW_PGTABLE, __pa((i & 1) ? pgd_a : pgd_b), 0, 0);
#elif MODE == M_TIMER
	unsigned t = ticks;
	(void)i;
	hcall(LHCALL_SET_CLOCKEVENT, 1000, 0, 0);	/* 1 us: as soon as the Host can */
	while (ticks == t)
		hcall(LHCALL_HALT, 0, 0, 0);
#elif MODE == M_DMAOUT
	(void)i;
	out_dma.used_len = 0;
	hcall(LHCALL_SEND_DMA, DMA_KEY, __pa(&out_dma), 0);
#elif MODE == M_IRQ
	/* Ask for IRQ 1 with a marker; the Launcher raises it with LHREQ_IRQ and its next read()
	 * delivers it before the Guest runs on. */
	unsigned seen = irqs;
	(void)i;
	mark(IRQ_PLEASE);
	while (irqs == seen)
		;
#elif MODE == M_TIMEACC
	/* One clock event DELAY_NS ahead and HALT until it fires; the Launcher subtracts DELAY_NS
	 * from the lap (N is 1) to get how late the Guest woke. */
	unsigned t = ticks;
	(void)i;
	hcall(LHCALL_SET_CLOCKEVENT, DELAY_NS, 0, 0);
	while (ticks == t)
		hcall(LHCALL_HALT, 0, 0, 0);
#elif MODE == M_DEMAND
	if ((i & 15) == 0)
		hcall(LHCALL_FLUSH_TLB, 0, 0, 0);	/* the user part only */
	if (*(volatile char *)(0x00400000UL + (i & 15) * PAGE_SIZE) != (char)(i & 15))
		lguest_crash("demand-fault read another page than its own");
#elif MODE == M_MEMLIN
	/* One store per 64-byte line through MEM_MB of the kernel's linear map. */
	volatile unsigned *p = (volatile unsigned *)__va(16 << 20);
	for (unsigned long off = 0; off < (MEM_MB << 20) / 4; off += 16)
		p[off] = i;
#elif MODE == M_MEMRAND
	volatile unsigned *p = (volatile unsigned *)__va(16 << 20);
	unsigned x = i * 2654435761u + 1;
	for (unsigned long k = 0; k < (MEM_MB << 20) / 64; k++) {
		x = x * 1103515245u + 12345u;
		p[(x >> 4) & (((MEM_MB << 20) / 4 - 1) & ~15u)] = k;
	}
#endif
}

int main(void)
{
	lguest_init();
	install_trap(14, skip_load, GATE_INTERRUPT, 0);
	install_trap(32, timer_irq, GATE_INTERRUPT, 0);
	install_trap(33, launcher_irq, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	lguest_data.irq_enabled = X86_EFLAGS_IF;
#if MODE == M_PTE || MODE == M_CTXSW
	own_page_tables();
	warm_shadows();
#endif
#if MODE == M_DEMAND
	demand_pages();
	own_page_tables();
#endif
#if USER_MODE
	user_pages();
	own_page_tables();
	hcall(LHCALL_FLUSH_TLB, 1, 0, 0);	/* the Launcher's kernel mappings let the user in */
	user_mode_setup();
	install_trap(0x80, sys_call, GATE_TRAP, 3);
#if MODE == M_COW
	install_trap(14, cow_fault, GATE_INTERRUPT, 0);
#endif
#endif
	out_dma.addr[0] = __pa(page);
	out_dma.len[0] = PAGE_SIZE;
	out_dma.len[1] = 0;
	mark(0);
#if USER_MODE
	enter_user(UCODE, USTACK_TOP);		/* the laps run there */
#endif
	for (unsigned lap = 1; lap <= LAPS; lap++) {
		for (unsigned i = 0; i < N; i++)
			one_op(i);
		mark(lap);
	}
	return 0;
}
