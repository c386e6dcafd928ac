/* Interrupt, timer and HALT scenarios, one per MODE (tests/test_interrupts.py). */
#include "lguest.h"

#include "checkpoint.h"

static volatile unsigned stop_flag;
static volatile unsigned log[16], nlog, ticks;
static volatile unsigned seen_enabled, seen_eflags, seen_cs, seen_eip, seen_sec;

static volatile unsigned tick_tsc;	/* low word of the TSC when IRQ 0's handler last ran */

static inline unsigned rdtsc_low(void)
{
	unsigned lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return lo;
}

static void irq_handler(struct trapframe *tf)
{
	if (tf->trapnum == 32)
		tick_tsc = rdtsc_low();
	if (nlog < 16)
		log[nlog++] = tf->trapnum - 32;
	seen_enabled = lguest_data.irq_enabled;
	seen_eflags = tf->eflags;
	seen_cs = tf->cs;
	seen_eip = tf->eip;
	seen_sec = lguest_data.time.tv_sec;
	if (tf->trapnum == 32)
		ticks++;
}

static __attribute__((unused)) void print_log(const char *what)
{
	printk("%s:", what);
	for (unsigned i = 0; i < nlog; i++)
		printk(" %u", log[i]);
	printk("\n");
}

static __attribute__((unused)) void nm_handler(struct trapframe *tf)
{
	(void)tf;
	ticks++;
	hcall(LHCALL_TS, 0, 0, 0);
}

/* The noirq window test: a loop of hypercalls whose every exit leaves EIP inside the window. */
extern char win_start[], win_end[];
static volatile unsigned counter;
__asm__(".text\n.globl window_loop, win_start, win_end\n"
	"window_loop:\nwin_start:\n"
	"\txorl %eax, %eax\n\tint $0x1f\n\tincl counter\n\tcmpl $5, counter\n\tjne win_start\n"
	"win_end:\n\tret\n");
void window_loop(void);

static __attribute__((unused)) void spin(unsigned n)
{
	for (volatile unsigned i = 0; i < n; i++)
		;
}

int main(void)
{
#if MODE == 4
	lguest_data.noirq_start = (unsigned long)win_start;
	lguest_data.noirq_end = (unsigned long)win_end;
	for (int i = 0; i < 64; i++)
		lguest_data.hcall_status[i] = 0xFF;
	hcall(LHCALL_LGUEST_INIT, __pa(&lguest_data), 0, 0);
#else
	lguest_init();
#endif
	for (int v = 32; v < 38; v++)
		install_trap(v, irq_handler, v == 36 ? GATE_TRAP : GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;

#if MODE == 1	/* one IRQ through an interrupt gate, one through a trap gate: the frame and flags */
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	checkpoint(1);		/* the test raises IRQ 3 here */
	printk("irq %u enabled_in_handler=%x eflags_if=%x cs=%x eip_ok=%u sec=%u enabled_after=%x\n",
	       log[0], seen_enabled, seen_eflags & X86_EFLAGS_IF, seen_cs,
	       seen_eip > 0xC0100000 && seen_eip < (unsigned)win_start + 0x10000, seen_sec,
	       (unsigned)lguest_data.irq_enabled);
	checkpoint(2);		/* IRQ 4: a trap gate */
	printk("irq %u enabled_in_handler=%x\n", log[1], seen_enabled);
#elif MODE == 2	/* lowest first; a blocked IRQ waits until unblocked */
	lguest_data.blocked_interrupts = 1 << 4;
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	checkpoint(1);		/* the test raises 5, 3 and 4 */
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	print_log("blocked");
	lguest_data.blocked_interrupts = 0;
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	print_log("unblocked");
#elif MODE == 3	/* nothing arrives while interrupts are disabled; an IRQ with no gate stays pending */
	lguest_data.irq_enabled = 0;
	checkpoint(1);		/* the test raises 3 and 6 */
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	print_log("disabled");
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	print_log("enabled");
	install_trap(38, irq_handler, GATE_INTERRUPT, 0);
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	print_log("gate");
#elif MODE == 4	/* the noirq window */
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	checkpoint(1);		/* the test raises 3 */
	window_loop();
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	printk("delivered after %u hypercalls in the window: %u\n", counter, nlog);
#elif MODE == 5	/* the timer kicks a Guest that never exits; 0 cancels; HALT sleeps until IRQ 0 */
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	hcall(LHCALL_SET_CLOCKEVENT, 2000000, 0, 0);
	while (!ticks)
		;
	printk("tick\n");
	hcall(LHCALL_SET_CLOCKEVENT, 5000000, 0, 0);
	hcall(LHCALL_SET_CLOCKEVENT, 0, 0, 0);
	spin(20000);
	printk("cancelled: ticks=%u\n", ticks);
	checkpoint(1);
	hcall(LHCALL_SET_CLOCKEVENT, 1000000000, 0, 0);
	hcall(LHCALL_SET_CLOCKEVENT, 300000000, 0, 0);	/* replaces the 1 s expiry */
	lguest_data.irq_enabled = 0;
	hcall(LHCALL_HALT, 0, 0, 0);
	printk("woke: ticks=%u enabled=%x\n", ticks, (unsigned)lguest_data.irq_enabled);
	checkpoint(2);
#elif MODE == 6	/* a busy Guest: for break-out and signals */
	/* Spin until the test sets stop_flag, whose Guest-physical address the checkpoint carries. */
	cp_dma.addr[1] = __pa(&stop_flag);
	checkpoint(1);
	while (!stop_flag)
		;
	printk("done\n");
#elif MODE == 10	/* busy work whose result can be checked: for signals landing anywhere */
	/* An LCG step per turn until the test sets stop_flag; with EXITS, every 64th turn also sets the
	 * clock event, so hypercalls and timer interrupts keep the Host busy all along. */
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	cp_dma.addr[1] = __pa(&stop_flag);
	checkpoint(1);
	unsigned x = 1, n = 0;
	while (!stop_flag) {
		x = x * 1103515245u + 12345u;
		n++;
		if (EXITS && (n & 63) == 0)
			hcall(LHCALL_SET_CLOCKEVENT, 100000, 0, 0);
	}
	printk("n=%u x=%u\n", n, x);
#elif MODE == 7	/* a halted Guest with no timer: only a break gets the Launcher back */
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	hcall(LHCALL_HALT, 0, 0, 0);
	print_log("woke");
#elif MODE == 8	/* the virtual TS flag: #NM reaches the Guest only while it is set */
	install_trap(7, nm_handler, GATE_TRAP, 0);
	hcall(LHCALL_TS, 8, 0, 0);
	__asm__ volatile("movaps %%xmm0, %%xmm1" ::: "memory");
	printk("nm=%u\n", ticks);
	__asm__ volatile("movaps %%xmm1, %%xmm0" ::: "memory");
	printk("nm=%u\n", ticks);
#elif MODE == 11	/* idle: HALT with the timer ten seconds away; then timers of DELAY_NS, each timed */
	/* Checkpoint 1, ten seconds asleep as an idle tickless kernel would be (a clock event can be
	 * at most 2^32 ns ahead, so five of 2 s), checkpoint 2; then for each of WAKES rounds
	 * checkpoint 3, one clock event DELAY_NS ahead, HALT, and checkpoint 4 once it woke.
	 * Checkpoint 4 carries how late the handler ran, in microseconds by the TSC, from just
	 * before SET_CLOCKEVENT (~0 when the Host gave no tsc_khz). */
	checkpoint(1);
	for (unsigned i = 0; i < 5; i++) {
		unsigned before = ticks;
		hcall(LHCALL_SET_CLOCKEVENT, 2000000000u, 0, 0);
		while (ticks == before)
			hcall(LHCALL_HALT, 0, 0, 0);
	}
	checkpoint(2);
	for (unsigned i = 0; i < WAKES; i++) {
		unsigned before = ticks;
		checkpoint(3);
		unsigned t0 = rdtsc_low(), mhz = lguest_data.tsc_khz / 1000;
		hcall(LHCALL_SET_CLOCKEVENT, DELAY_NS, 0, 0);
		while (ticks == before)
			hcall(LHCALL_HALT, 0, 0, 0);
		cp_dma.addr[1] = mhz ? (tick_tsc - t0) / mhz - DELAY_NS / 1000 : ~0u;
		checkpoint(4);
	}
	printk("woke %u times\n", ticks);
#elif MODE == 9	/* an NMI is the Host's business: the Guest carries on */
	checkpoint(1);
	printk("still here\n");
#endif
	return 0;
}
