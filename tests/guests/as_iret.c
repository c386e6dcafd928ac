/* iret at privilege level 1 to the same level (test_assist.py): the flags
 * the frame may change and those it may not, and the code segment checks. */
#include "lguest.h"

unsigned iret_flags(unsigned eflags);
int iret_to(unsigned cs);
extern char at_iret_flags[], at_iret_to[], iret_recover[];
extern unsigned iret_esp_delta, iret_cs, based_esp;
unsigned iret_based_ss(void);
static char bstack[4096] __attribute__((aligned(4096)));

static unsigned long gdt[32][2];
static unsigned trap, err, at;

static void fault(struct trapframe *tf)
{
	trap = tf->trapnum;
	err = tf->errcode;
	at = tf->eip;
	if (tf->eip == (unsigned long)at_iret_to)
		tf->eip = (unsigned long)iret_recover;
	else
		lguest_crash("unexpected fault");
}

static unsigned flags_now(void)
{
	unsigned f;

	__asm__ __volatile__("pushfl; popl %0" : "=r"(f));
	return f;
}

static void try_cs(unsigned cs)
{
	int ok;

	trap = err = at = 0;
	iret_cs = 0;
	ok = iret_to(cs);
	printk("C cs=%x ok=%d trap=%u err=%x at_iret=%d cs_seen=%x\n", cs, ok, trap, err,
	       at == (unsigned long)at_iret_to, iret_cs);
}

int main(void)
{
	unsigned base, in;

	lguest_init();
	install_trap(11, fault, GATE_TRAP, 0);
	install_trap(13, fault, GATE_TRAP, 0);
	base = flags_now() & ~0x00254DD5u;
	printk("F base=%x\n", base);
	/* CF PF AF ZF SF OF DF on, then off; IOPL 3 and IF off in the frame
	 * (an iret at CPL 1 changes neither); AC and ID on. */
	static const unsigned probes[] = { 0x0CD5, 0x0000, 0x3000, 0x0001, 0x00240040 };
	for (unsigned i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		in = probes[i] | (i == 2 ? base & ~0x200u : base);
		printk("F in=%x out=%x delta=%x\n", in, iret_flags(in), iret_esp_delta);
	}

	try_cs(__KERNEL_CS);
	try_cs(0);		/* null: #GP(0) */
	try_cs(0x69);		/* a data segment: #GP(0x68) */
	try_cs(0x60);		/* RPL 0, inner to CPL 1: #GP(0x60) */
	try_cs(0x63);		/* RPL 3, but DPL 1 code: #GP(0x60) */
	try_cs(0x65);		/* the LDT: #GP(0x64) */
	try_cs(0x73);		/* entry 14 is empty so far: #GP(0x70) */
	try_cs(0x101);		/* past the 32-entry GDT: #GP(0x100) */

	/* A second flat code segment, and a not-present one. */
	gdt[12][0] = 0x0000FFFF; gdt[12][1] = 0x00CFBA00;
	gdt[13][0] = 0x0000FFFF; gdt[13][1] = 0x00CFB200;
	gdt[20][0] = 0x0000FFFF; gdt[20][1] = 0x00CFBA00;
	gdt[21][0] = 0x0000FFFF; gdt[21][1] = 0x00CF3A00;
	/* A stack segment based so that 0x9000 is the top of bstack. */
	{
		unsigned long b = (unsigned long)bstack + sizeof(bstack) - 0x9000;

		gdt[22][0] = 0xFFFF | (b & 0xFFFF) << 16;
		gdt[22][1] = ((b >> 16) & 0xFF) | 0x00CFB200 | (b & 0xFF000000);
	}
	hcall(LHCALL_LOAD_GDT, __pa(gdt), 32, 0);
	try_cs(20 << 3 | 1);	/* arrives with cs 0xA1 */
	try_cs(21 << 3 | 1);	/* not present: #NP(0xA8) */
	in = iret_based_ss();
	printk("B flags=%x esp=%x\n", in, based_esp);
	return 0;
}
