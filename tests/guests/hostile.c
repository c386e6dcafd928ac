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
#endif
	printk("survived\n");
	return 0;
}
