#include "lguest.h"

/*G:110 trap_dispatch() finds the C handler a test or the bundled Guest
 * installed for the vector, and crashes the Guest with a clear message when
 * there is none: a Guest that takes a trap it did not expect should say so. :*/
static trap_handler_t handlers[129];

void trap_dispatch(struct trapframe *tf)
{
	trap_handler_t h = tf->trapnum < 129 ? handlers[tf->trapnum] : 0;

	if (!h) {
		printk("unexpected trap %u at 0x%x err 0x%x\n", tf->trapnum, tf->eip, tf->errcode);
		lguest_crash("unexpected trap");
	}
	h(tf);
}

extern const unsigned long trap_entries[64];
extern char trap_entry_128[];

/* An i386 gate: offset split across both words, the kernel code selector,
 * present, the given DPL and type (0xE interrupt gate, 0xF trap gate). */
void set_idt_gate(unsigned vector, unsigned long addr, unsigned type, unsigned dpl)
{
	unsigned long lo = (__KERNEL_CS << 16) | (addr & 0xFFFF);
	unsigned long hi = (addr & 0xFFFF0000) | 0x8000 | (dpl << 13) | (type << 8);

	hcall(LHCALL_LOAD_IDT_ENTRY, vector, lo, hi);
}

void install_trap(unsigned vector, trap_handler_t h, unsigned type, unsigned dpl)
{
	unsigned long entry = vector == 128 ? (unsigned long)trap_entry_128 : trap_entries[vector];

	handlers[vector] = h;
	set_idt_gate(vector, entry, type, dpl);
}
