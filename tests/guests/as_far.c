/* Far lret, ljmp and lcall at privilege level 1 (test_assist.py). */
#include "lguest.h"

int far_lret(void), far_lret_imm(void), far_ljmp(void), far_lcall(void);
int far_ljmp_rpl0(void), far_lcall_rpl0(void), far_bad(void);
extern char at_lcall_ret[], at_lcall_rpl0_ret[];
extern char bad_ljmp_data[], bad_ljmp_user[], bad_ljmp_user0[], bad_ljmp_null[];
extern char bad_lcall_data[], bad_lcall_user[], bad_ljmp_np[], bad_ljmp_sys[], bad_lret_rpl0[];
extern unsigned far_cs, callee_ret, callee_cs, callee_depth;

static unsigned long gdt[32][2];

#define LABEL(x) printk("L " #x " %x\n", (unsigned)(unsigned long)(x))

static void fault(struct trapframe *tf)
{
	unsigned char op = *(unsigned char *)tf->eip;

	printk("T vec=%u err=%x eip=%x\n", tf->trapnum, tf->errcode, tf->eip);
	tf->eip += op == 0xEA || op == 0x9A ? 7 : 1;
}

#define RUN(f) do { far_cs = callee_ret = callee_cs = callee_depth = 0; \
	int d = f(); \
	printk("R " #f " delta=%x cs=%x ret=%x saved_cs=%x depth=%x\n", d, far_cs, \
	       callee_ret, callee_cs, callee_depth); } while (0)

int main(void)
{
	lguest_init();
	install_trap(11, fault, GATE_TRAP, 0);
	install_trap(13, fault, GATE_TRAP, 0);
	gdt[12][0] = 0x0000FFFF; gdt[12][1] = 0x00CFBA00;	/* kernel code DPL 1 */
	gdt[13][0] = 0x0000FFFF; gdt[13][1] = 0x00CFB200;	/* kernel data DPL 1 */
	gdt[14][0] = 0x0000FFFF; gdt[14][1] = 0x00CFFA00;	/* user code DPL 3 */
	gdt[15][0] = 0x0000FFFF; gdt[15][1] = 0x00CFF200;	/* user data DPL 3 */
	gdt[20][0] = 0x0000FFFF; gdt[20][1] = 0x00CF3A00;	/* code DPL 1, not present */
	gdt[21][0] = 0x00000000; gdt[21][1] = 0x0000EC00;	/* a call gate */
	hcall(LHCALL_LOAD_GDT, __pa(gdt), 32, 0);
	LABEL(at_lcall_ret); LABEL(at_lcall_rpl0_ret);
	LABEL(bad_ljmp_data); LABEL(bad_ljmp_user); LABEL(bad_ljmp_user0); LABEL(bad_ljmp_null);
	LABEL(bad_lcall_data); LABEL(bad_lcall_user); LABEL(bad_ljmp_np); LABEL(bad_ljmp_sys);
	LABEL(bad_lret_rpl0);
	RUN(far_lret);
	RUN(far_lret_imm);
	RUN(far_ljmp);
	RUN(far_lcall);
	RUN(far_ljmp_rpl0);
	RUN(far_lcall_rpl0);
	RUN(far_bad);
	return 0;
}
