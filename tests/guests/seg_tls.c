/* LOAD_TLS (test_segments.py): three descriptors into GDT entries 6-8, used
 * through %gs.  Entry 6 is DPL 0, which the Host must raise to 1 before a
 * CPL 1 Guest may load it; entry 7 is DPL 3; entry 8 is not present. */
#include "lguest.h"

#define DATA(base, dpl, p) { 0xFFFF | ((base) & 0xFFFF) << 16, \
	(((base) >> 16) & 0xFF) | 0x00CF1200 | (dpl) << 13 | (p) << 15 | ((base) & 0xFF000000) }

volatile unsigned int var_a = 0xAAAA0001, var_b = 0xBBBB0002, var_c = 0xCCCC0003;
static unsigned long tls[3][2];

static void set(unsigned long d[2], unsigned long base, unsigned dpl, unsigned p)
{
	unsigned long t[2] = DATA(base, dpl, p);

	d[0] = t[0];
	d[1] = t[1];
}

static unsigned read_gs(unsigned sel)
{
	unsigned v;

	__asm__ __volatile__("movl %1, %%gs\n\tmovl %%gs:0, %0" : "=r"(v) : "r"(sel) : "memory");
	return v;
}

static unsigned reread_gs(void)
{
	unsigned v;

	__asm__ __volatile__("movl %%gs:0, %0" : "=r"(v) : : "memory");
	return v;
}

extern char np_at[];
static void np(struct trapframe *tf)
{
	printk("trap %u err=%x at_np=%d\n", tf->trapnum, tf->errcode, tf->eip == (unsigned long)np_at);
	tf->eip += 2;
}

int main(void)
{
	lguest_init();
	install_trap(11, np, GATE_TRAP, 0);
	install_trap(13, np, GATE_TRAP, 0);
	set(tls[0], (unsigned long)&var_a, 0, 1);
	set(tls[1], (unsigned long)&var_b, 3, 1);
	set(tls[2], (unsigned long)&var_c, 1, 0);
	hcall(LHCALL_LOAD_TLS, __pa(tls), 0, 0);
	printk("gs6=%x gs7=%x\n", read_gs(6 << 3 | 1), read_gs(7 << 3 | 3));
	__asm__ __volatile__("movl %0, %%gs\n\t.globl np_at\nnp_at: movl %1, %%gs"
			     : : "r"(0), "r"(8 << 3 | 1) : "memory");
	/* Change entry 6 while %gs holds it: like 2.6.23's Switcher, the Host
	 * reloads the segment registers on the way back in. */
	read_gs(6 << 3 | 1);
	set(tls[0], (unsigned long)&var_c, 1, 1);
	hcall(LHCALL_LOAD_TLS, __pa(tls), 0, 0);
	printk("reloaded=%x\n", reread_gs());
	printk("var_b=%x var_c=%x\n", (unsigned)(unsigned long)&var_b, (unsigned)(unsigned long)&var_c);
	__asm__ __volatile__("movl %0, %%gs" : : "r"(0));
	return 0;
}
