/* Hardware semantics (tests/test_hw_semantics.py): between two checkpoints the
 * Guest makes HCALLS empty hypercalls, takes a #UD (ud2) that the Host reflects
 * to its handler, returns from it with lguest_iret's `iret`, and makes one
 * `int $0x80` through a DPL 1 trap gate (a direct trap, abi §5.3).  On
 * hardware KVM the CPU runs all of it; the Host assists nothing. */
#include "lguest.h"

#include "checkpoint.h"

#define HCALLS 50

static unsigned ud_eip, ud_cs, sys_cs, sys_eax;
extern char at_ud2[];

static void ud(struct trapframe *tf)
{
	ud_eip = tf->eip;
	ud_cs = tf->cs;
	tf->eip += 2;
}

static void sys(struct trapframe *tf)
{
	sys_cs = tf->cs;
	sys_eax = tf->eax;
	tf->eax = 0x5EC0DE;
}

int main(void)
{
	unsigned r;

	lguest_init();
	install_trap(6, ud, GATE_TRAP, 0);
	install_trap(0x80, sys, GATE_TRAP, 1);
	checkpoint(1);
	for (int i = 0; i < HCALLS; i++)
		hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	__asm__ __volatile__(".globl at_ud2\nat_ud2: ud2" ::: "memory");
	__asm__ __volatile__("int $0x80" : "=a"(r) : "a"(0x80) : "memory");
	checkpoint(2);
	printk("ud eip_ok=%d cs=%x\n", ud_eip == (unsigned long)at_ud2, ud_cs);
	printk("sys cs=%x eax_in=%x eax_out=%x\n", sys_cs, sys_eax, r);
	return 0;
}
