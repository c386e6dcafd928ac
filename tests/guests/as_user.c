/* A Guest kernel that irets to user mode (test_assist.py).  It loads a GDT
 * with the user segments (14, 15), tells the Host its kernel stack, builds a
 * CPL 3 frame and irets; each user-mode trap reaches the #GP handler here,
 * which prints the frame and moves the user on past the instruction. */
#include "lguest.h"

static unsigned long gdt[32][2];
static char kstack[4096] __attribute__((aligned(4096)));
static char ustack[4096] __attribute__((aligned(4096)));
volatile unsigned int user_flag;

extern char user_entry[], user_int80[], user_hcall[], user_int3[], user_cli[];
extern char user_ljmp_kernel[], user_lret_kernel[], user_iret_kernel[];
extern char user_after_lcall[], user_after_iret[], user_done[];
extern unsigned user_lcall_esp, user_callee_esp, user_callee_ret, user_callee_cs;
void enter_user(unsigned long eip, unsigned long esp, unsigned long eflags);

#define LABEL(x) printk("L " #x " %x\n", (unsigned)(unsigned long)(x))

/* How far to step over the instruction that trapped. */
static unsigned insn_len(const unsigned char *p)
{
	switch (*p) {
	case 0xCD: return 2;			/* int n */
	case 0xEA: case 0x9A: return 7;		/* ljmp/lcall ptr16:32 */
	default: return 1;			/* int3, cli, lret, iret */
	}
}

static void gp(struct trapframe *tf)
{
	printk("T vec=%u err=%x eip=%x cs=%x eflags=%x esp=%x ss=%x ds=%x ebx=%x ecx=%x "
	       "edx=%x esi=%x frame_end=%x flag=%x\n", tf->trapnum, tf->errcode, tf->eip,
	       tf->cs, tf->eflags, tf->esp, tf->ss, tf->ds, tf->ebx, tf->ecx, tf->edx,
	       tf->esi, (unsigned)(unsigned long)(tf + 1), user_flag);
	if (tf->eip == (unsigned long)user_done || tf->cs != 0x73) {
		printk("lcall esp=%x callee esp=%x ret=%x cs=%x\n", user_lcall_esp,
		       user_callee_esp, user_callee_ret, user_callee_cs);
		lguest_crash("Power down");
	}
	tf->eip += insn_len((const unsigned char *)tf->eip);
}

int main(void)
{
	lguest_init();
	gdt[12][0] = 0x0000FFFF; gdt[12][1] = 0x00CFBA00;	/* kernel code DPL 1 */
	gdt[13][0] = 0x0000FFFF; gdt[13][1] = 0x00CFB200;	/* kernel data DPL 1 */
	gdt[14][0] = 0x0000FFFF; gdt[14][1] = 0x00CFFA00;	/* user code DPL 3 */
	gdt[15][0] = 0x0000FFFF; gdt[15][1] = 0x00CFF200;	/* user data DPL 3 */
	hcall(LHCALL_LOAD_GDT, __pa(gdt), 32, 0);
	install_trap(13, gp, GATE_TRAP, 0);
	hcall(LHCALL_SET_STACK, __KERNEL_DS, (unsigned long)kstack + sizeof(kstack), 1);
	printk("L kstack_top %x\n", (unsigned)(unsigned long)(kstack + sizeof(kstack)));
	printk("L ustack_top %x\n", (unsigned)(unsigned long)(ustack + sizeof(ustack)));
	LABEL(user_int80); LABEL(user_hcall); LABEL(user_int3); LABEL(user_cli);
	LABEL(user_ljmp_kernel); LABEL(user_lret_kernel); LABEL(user_iret_kernel);
	LABEL(user_after_lcall); LABEL(user_done);
	/* IOPL 3 and CF in the frame: an iret at CPL 1 takes CF but not IOPL. */
	enter_user((unsigned long)user_entry, (unsigned long)ustack + sizeof(ustack), 0x3203);
	lguest_crash("enter_user returned");
}
