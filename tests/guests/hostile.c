/* Hostile Guests for tests/test_hostile.py, one attack per MODE, random
 * choices from an LCG seeded with SEED, so every run can be reproduced.  A
 * Guest that survives its attack says "survived" and powers off. */
#include "lguest.h"

#ifndef SEED
#define SEED 1
#endif
#ifndef ROUNDS
#define ROUNDS 200
#endif

static unsigned rnd_state = SEED * 2654435761u + 1;
static unsigned rnd(void)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return (rnd_state >> 8) ^ (rnd_state << 24);
}

/* Interesting addresses: inside RAM, at the edges of pfn_limit, the Switcher,
 * wrapping, unaligned, kernel virtual. */
static __attribute__((unused)) unsigned edgy(void)
{
	static const unsigned picks[] = { 0, 4, 0x1000, 0x3FFFFC, 0x400000, 0x3FF000, 0x401000,
		0xFFC00000, 0xFFFFFFFC, 0xFFFFFFFF, 0x80000000, 0xC0000000, 0xC0100000, 3, 0x1001 };
	unsigned r = rnd();
	return (r & 1) ? picks[(r >> 1) % (sizeof(picks) / sizeof(picks[0]))] : rnd();
}

static __attribute__((unused)) struct lguest_dma dmas[4];
static __attribute__((unused)) unsigned long gdt[64];
static volatile unsigned sink;

static __attribute__((unused)) void nothing(struct trapframe *tf)
{
	(void)tf;
}

static volatile unsigned long recover;
volatile unsigned probe_cs;
void cpl_probe(void);
__asm__(".text\n.globl cpl_probe\ncpl_probe:\n\tmovl %cs, %eax\n\tmovl %eax, probe_cs\n\tlret\n");
static volatile unsigned refused;

static __attribute__((unused)) void to_recover(struct trapframe *tf)
{
	refused++;
	tf->eip = recover;
}

/* The Switcher's 4 MB at the top of the address space (PGD entry 1023). */
#define SWITCHER_VA	0xFFC00000u
#define SWITCHER_PGD	1023u

/* One store of v at va, "movl %eax,(%edx)": two bytes, which the #PF handler
 * below steps over, counting the fault and whether cr2 named va. */
static volatile unsigned stores, faults, wrong_cr2, store_va;
static __attribute__((unused)) void store(unsigned va, unsigned v)
{
	store_va = va;
	stores++;
	__asm__ volatile("movl %%eax, (%%edx)" :: "a"(v), "d"(va) : "memory");
}

static __attribute__((unused)) void skip_store(struct trapframe *tf)
{
	faults++;
	if (lguest_data.cr2 != store_va)
		wrong_cr2++;
	tf->eip += 2;
}

/* Garbage into every page of the Switcher's first eight and anywhere in its 4 MB. */
static __attribute__((unused)) void scribble(void)
{
	for (unsigned page = 0; page < 8; page++)
		store(SWITCHER_VA + page * PAGE_SIZE + (rnd() & 0xFFC), rnd());
	for (unsigned i = 0; i < ROUNDS; i++)
		store(SWITCHER_VA + (rnd() & 0x3FFFFC), rnd());
}

/* The page directory the Launcher built and we run on: the page below the
 * initrd, which sits at the top of RAM (boot_params e820 size, initrd size). */
static __attribute__((unused)) unsigned long launcher_pgdir(void)
{
	const char *bp = boot_params;

	return *(const u32 *)(bp + 0x2D0 + 8) - *(const u32 *)(bp + 0x21C) - PAGE_SIZE;
}

static __attribute__((unused)) unsigned long fake_ptes[1024] __attribute__((aligned(PAGE_SIZE)));
static __attribute__((unused)) unsigned char scratch[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

int main(void)
{
	lguest_init();
	lguest_data.blocked_interrupts = 0;
#if MODE == 1	/* random hypercalls with random arguments (HALT and CRASH left out) */
	for (unsigned i = 0; i < ROUNDS; i++) {
		unsigned call = rnd() % 18;
		if (call == LHCALL_HALT || call == LHCALL_CRASH)
			continue;
		hcall(call, edgy(), edgy(), edgy());
	}
#elif MODE == 2	/* DMA keys and sections everywhere */
	for (unsigned i = 0; i < ROUNDS; i++) {
		struct lguest_dma *d = &dmas[rnd() % 4];
		for (unsigned s = 0; s < 4; s++) {
			d->addr[s] = edgy();
			d->len[s] = (rnd() & 1) ? rnd() % 8192 : 0;
		}
		d->used_len = 0;
		unsigned where = (rnd() & 3) ? __pa(d) : edgy();
		if (rnd() & 1)
			hcall(LHCALL_BIND_DMA, edgy(), where, ((rnd() % 4) << 8) | (rnd() % 40));
		else
			hcall(LHCALL_SEND_DMA, edgy(), where, 0);
	}
#elif MODE == 3	/* garbage in its own page tables, then touching memory */
	for (unsigned i = 0; i < ROUNDS; i++) {
		unsigned va = 0xC0000000u + (rnd() % (4 << 20));
		hcall(LHCALL_SET_PTE, edgy(), edgy(), rnd());
		hcall(LHCALL_SET_PMD, edgy(), rnd() % 1024, 0);
		sink += *(volatile unsigned *)va;
	}
#elif MODE == 4	/* wild GDT and IDT entries */
	for (unsigned i = 0; i < ROUNDS; i++) {
		for (unsigned e = 0; e < 32; e++)
			gdt[e] = rnd();
		hcall(LHCALL_LOAD_GDT, __pa(gdt), rnd() % 40, 0);
		hcall(LHCALL_LOAD_IDT_ENTRY, rnd() % 300, rnd(), rnd());
		hcall(LHCALL_LOAD_TLS, (rnd() & 1) ? __pa(gdt) : edgy(), 0, 0);
	}
#elif MODE == 5	/* a fault with no handler on a stack that is not there: a "triple fault" */
	hcall(LHCALL_SET_STACK, __KERNEL_DS, 0xC0000000u + 0x3FF000, 1);
	__asm__ volatile("movl $0x00800000, %%esp; pushl $1" ::: "memory");
#elif MODE == 6	/* a storm: hypercalls and one-nanosecond timers, interrupts on */
	install_trap(32, nothing, GATE_INTERRUPT, 0);
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	for (unsigned i = 0; i < ROUNDS * 20; i++) {
		hcall(LHCALL_SET_CLOCKEVENT, 1, 0, 0);
		hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	}
#elif MODE == 7	/* spin forever with interrupts disabled */
	lguest_data.irq_enabled = 0;
	hcall(LHCALL_SET_CLOCKEVENT, 1000, 0, 0);
	for (;;)
		sink++;
#elif MODE == 8	/* try to reach CPL 0: the Switcher's own selectors, a DPL 0 code segment */
	install_trap(13, to_recover, GATE_TRAP, 0);
	install_trap(11, to_recover, GATE_TRAP, 0);
	for (unsigned e = 12; e < 16; e++) {	/* keep the kernel's and user's flat segments */
		gdt[2 * e] = 0x0000FFFF;
		gdt[2 * e + 1] = e & 1 ? 0x00CFB300 | ((e >= 14) << 14) : 0x00CFBB00 | ((e >= 14) << 14);
	}
	gdt[2 * 20] = 0x0000FFFF;		/* entry 20: flat code, DPL 0 (the Host makes it 1) */
	gdt[2 * 20 + 1] = 0x00CF9B00;
	hcall(LHCALL_LOAD_GDT, __pa(gdt), 32, 0);
	/* The #GP handler resumes at `recover`, the label right after the call. */
#define FAR_CALL(sel) \
	__asm__ volatile("movl $1f, recover\n\tlcall $" #sel ", $0\n1:" ::: "memory")
	FAR_CALL(0x50);
	FAR_CALL(0x58);
	FAR_CALL(0x80);
	FAR_CALL(0x88);
	FAR_CALL(0xF8);
	__asm__ volatile("lcall $0xA0, $cpl_probe" ::: "memory", "eax");
	printk("refused %u probe cs %x\n", refused, probe_cs);
#elif MODE == 9	/* garbage stored straight into the Switcher's 4 MB */
	install_trap(14, skip_store, GATE_INTERRUPT, 0);
	scribble();
	printk("switcher stores %u faults %u wrong cr2 %u\n", stores, faults, wrong_cr2);
#elif MODE == 10	/* page-table hypercalls aimed at the top 4 MB */
	for (unsigned i = 0; i < ROUNDS; i++)
		hcall(LHCALL_SET_PMD, launcher_pgdir(),
		      (rnd() & 1) ? SWITCHER_PGD : SWITCHER_PGD + rnd() % (0u - SWITCHER_PGD), 0);
	printk("set_pmd at the top ignored\n");
	hcall(LHCALL_SET_PTE, edgy(), SWITCHER_VA + (rnd() & 0x3FF000), rnd());
	printk("set_pte at the top ignored\n");
#elif MODE == 11	/* its own PGD entry 1023 rewritten, then the area touched */
	install_trap(14, skip_store, GATE_INTERRUPT, 0);
	/* Odd seeds: garbage entries (naming pages of its 16 MB, so that on the
	 * direct backend the CPU's own walks find memory); even: a page of its
	 * own everywhere.  Seeds 1, 5, ...: a garbage page directory entry. */
	for (unsigned i = 0; i < 1024; i++)
		fake_ptes[i] = (SEED & 1) ? ((rnd() & 0x00FFFFFF) | 1) : (__pa(scratch) | 0x63);
	((volatile unsigned long *)__va(launcher_pgdir()))[SWITCHER_PGD] =
		(SEED % 4 == 1) ? ((rnd() & 0x00FFFFFF) | 1) : (__pa(fake_ptes) | 0x67);
	scribble();
	printk("switcher stores %u faults %u\n", stores, faults);
	hcall(LHCALL_SET_PMD, launcher_pgdir(), SWITCHER_PGD, 0);
	scribble();
	printk("after set_pmd stores %u faults %u\n", stores, faults);
#endif
	printk("survived\n");
	return 0;
}
