/* LOAD_GDT (test_segments.py).  The Guest hands over a GDT with every kind
 * of entry the Host must fix up, uses the new segments, and dies with
 * "Power down" so that the test can look at the real GDT the vCPU uses.
 * The Host's entries (10, 11, 16, 17, 31) get junk, which must be ignored. */
#include "lguest.h"

#define FLAT(type_dpl)	{ 0x0000FFFF, 0x00CF0000 | (type_dpl) << 8 }
#define BASED(base, type_dpl) { 0xFFFF | ((base) & 0xFFFF) << 16, \
	(((base) >> 16) & 0xFF) | 0x000F0000 | (type_dpl) << 8 | ((base) & 0xFF000000) }

/* type_dpl: P | DPL << 5 | S | type, as in the descriptor's second byte. */
#define P	0x80
#define S	0x10
#define DPL(n)	((n) << 5)
#define CODE	0xA	/* execute/read */
#define DATA	0x2	/* read/write */

volatile unsigned int vars[2] = { 0x5EED0001, 0x5EED0002 };
static unsigned long gdt[32][2];
static unsigned long small[14][2];

static void set(unsigned i, unsigned long a, unsigned long b)
{
	gdt[i][0] = a;
	gdt[i][1] = b;
}

extern char np_at[], sys_at[];
static void fault(struct trapframe *tf)
{
	printk("T vec=%u err=%x at_np=%d at_sys=%d\n", tf->trapnum, tf->errcode,
	       tf->eip == (unsigned long)np_at, tf->eip == (unsigned long)sys_at);
	tf->eip += 2;
}

int main(void)
{
	unsigned i, v, ds;

	lguest_init();
	install_trap(11, fault, GATE_TRAP, 0);
	install_trap(13, fault, GATE_TRAP, 0);
	for (i = 0; i < 32; i++)
		set(i, 0xFFFFFFFF, 0xFFFFFFFF);		/* junk, for the Host's own */
	set(0, 0, 0);
	for (i = 1; i < 10; i++)
		set(i, 0, 0);
	{
		unsigned long k[][2] = {
			FLAT(P | DPL(0) | S | CODE),	/* 12: kernel code, DPL 0 as Linux has it */
			FLAT(P | DPL(0) | S | DATA),	/* 13: kernel data, DPL 0 */
			FLAT(P | DPL(3) | S | CODE),	/* 14: user code */
			FLAT(P | DPL(3) | S | DATA),	/* 15: user data */
		};
		for (i = 0; i < 4; i++)
			set(12 + i, k[i][0], k[i][1]);
	}
	{
		unsigned long e[][2] = {
			FLAT(P | DPL(1) | S | DATA),			/* 18: flat data DPL 1 */
			BASED((unsigned long)vars, P | DPL(0) | S | DATA), /* 19: based DPL 0 */
			FLAT(DPL(0) | S | DATA),			/* 20: not present */
			{ 0x0000FFFF, 0x00AF9A00 },			/* 21: 64-bit code */
			{ 0x00000000, 0x0000EC00 },			/* 22: a call gate */
			{ 0x00000067, 0x00008900 },			/* 23: a TSS */
			FLAT(P | DPL(3) | S | DATA),			/* 24: DPL 3 stays */
			FLAT(P | DPL(2) | S | DATA),			/* 25: DPL 2 stays */
		};
		for (i = 0; i < 8; i++)
			set(18 + i, e[i][0], e[i][1]);
	}
	for (i = 26; i < 31; i++)
		set(i, 0, 0);
	hcall(LHCALL_LOAD_GDT, __pa(gdt), 32, 0);

	/* The new flat data segment, in %ds. */
	__asm__ __volatile__("movl %%ds, %1\n\t"
			     "movl %2, %%ds\n\t"
			     "movl vars+4, %0\n\t"
			     "movl %1, %%ds"
			     : "=&r"(v), "=&r"(ds) : "r"(18 << 3 | 1) : "memory");
	printk("R ds18=%x\n", v);
	/* The based one (DPL 0 in our table: the Host made it 1), in %fs;
	 * %fs stays loaded across the printk's hypercalls. */
	__asm__ __volatile__("movl %1, %%fs\n\tmovl %%fs:0, %0" : "=r"(v) : "r"(19 << 3 | 1));
	printk("R fs19=%x\n", v);
	__asm__ __volatile__("movl %%fs:4, %0\n\tmovl %%fs, %1" : "=r"(v), "=r"(ds));
	printk("R fs19+4=%x fs=%x\n", v, ds);
	/* DPL 3 data may be loaded at CPL 1 too. */
	__asm__ __volatile__("movl %1, %%fs\n\tmovl %%fs:vars, %0" : "=r"(v) : "r"(24 << 3 | 3));
	printk("R fs24=%x\n", v);
	/* Not present: #NP(selector).  A system descriptor: #GP(selector). */
	__asm__ __volatile__(".globl np_at\nnp_at: movl %0, %%fs" : : "r"(20 << 3 | 1));
	__asm__ __volatile__(".globl sys_at\nsys_at: movl %0, %%fs" : : "r"(23 << 3 | 1));
	__asm__ __volatile__("movl %0, %%fs" : : "r"(0));

	/* A shorter table changes only the entries it covers. */
	for (i = 0; i < 14; i++) {
		small[i][0] = gdt[i][0];
		small[i][1] = gdt[i][1];
	}
	small[1][0] = 0x0000FFFF;
	small[1][1] = 0x00CFB200;
	hcall(LHCALL_LOAD_GDT, __pa(small), 14, 0);
	return 0;
}
