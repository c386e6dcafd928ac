/* `int n` and `int3` at privilege level 1 (test_assist.py).  Only the
 * hypercall gate lets the Guest kernel in; every other software interrupt is
 * a #GP with error code n*8+2 and EIP on the instruction, even for a vector
 * the Guest gave a DPL 3 gate (0x30 is not one 2.6.23 let through). */
#include "lguest.h"

extern char at_int30[], at_int80[], at_int3[], at_int3cd[], at_hcall[];
extern char at_into[], at_into_clear[], at_icebp[], after_icebp[];
extern unsigned ints_esp, after_hcall[8];
void do_ints(void), do_into(void);

#define LABEL(x) printk("L " #x " %x\n", (unsigned)(unsigned long)(x))

static void gp(struct trapframe *tf)
{
	printk("T vec=%u err=%x eip=%x cs=%x eax=%x ebx=%x ecx=%x edx=%x esi=%x edi=%x "
	       "ebp=%x frame_end=%x\n", tf->trapnum, tf->errcode, tf->eip, tf->cs, tf->eax,
	       tf->ebx, tf->ecx, tf->edx, tf->esi, tf->edi, tf->ebp,
	       (unsigned)(unsigned long)&tf->esp);
	if (tf->trapnum == 13)
		tf->eip += *(unsigned char *)tf->eip == 0xCD ? 2 : 1;
}

static void never(struct trapframe *tf)
{
	printk("vector 0x30 delivered through its gate\n");
}

int main(void)
{
	lguest_init();
	install_trap(13, gp, GATE_TRAP, 0);
	install_trap(1, gp, GATE_TRAP, 0);
	install_trap(0x30, never, GATE_TRAP, 3);
	LABEL(at_int30); LABEL(at_int80); LABEL(at_int3); LABEL(at_int3cd); LABEL(at_hcall);
	LABEL(at_into); LABEL(at_into_clear); LABEL(at_icebp); LABEL(after_icebp);
	do_ints();
	printk("L ints_esp %x\n", ints_esp);
	printk("H eax=%x ebx=%x ecx=%x edx=%x esi=%x edi=%x ebp=%x esp=%x\n", after_hcall[0],
	       after_hcall[1], after_hcall[2], after_hcall[3], after_hcall[4], after_hcall[5],
	       after_hcall[6], after_hcall[7]);
	do_into();
	printk("into done\n");
	return 0;
}
