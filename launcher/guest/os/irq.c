#include "os.h"

/*G:300 Interrupts.  The Host delivers IRQ n through vector 0x20 + n of the
 * IDT we gave it, building the frame on our stack as the CPU would; the
 * runtime's entry stubs (traps.S) save the registers and call
 * trap_dispatch(), which calls do_IRQ() below for every vector we claimed.
 *
 * Two words of lguest_data replace the interrupt controller.  irq_enabled
 * is the interrupt flag: the cli/sti of this kernel are the one-instruction
 * stores in os.h, and an interrupt gate clears it for the handler's
 * duration, lguest_iret restoring it on the way out.  blocked_interrupts
 * is the mask.  We start with every IRQ masked and unmask one only when a
 * handler is registered for it, which matters more than it seems: the Host
 * always picks the lowest pending unmasked IRQ, and if that one has no gate
 * it stays pending and nothing behind it is delivered either. */
static struct {
	irq_handler_t handler;
	void *dev;
} irq_desc[LGUEST_IRQS];

static void do_IRQ(struct trapframe *tf)
{
	unsigned irq = tf->trapnum - 0x20;

	if (irq < LGUEST_IRQS && irq_desc[irq].handler)
		irq_desc[irq].handler(irq, irq_desc[irq].dev);
	else
		printk("spurious IRQ %u\n", irq);
}

void request_irq(unsigned irq, irq_handler_t handler, void *dev)
{
	unsigned long flags = local_irq_save();

	irq_desc[irq].handler = handler;
	irq_desc[irq].dev = dev;
	install_trap(0x20 + irq, do_IRQ, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts &= ~(1UL << irq);
	local_irq_restore(flags);
}
/*:*/

/*G:310 A kernel that faults should say where.  The Host reflects a trap it
 * cannot handle itself (a page fault on an address we never mapped, a
 * general protection fault) to the gate we install here; the faulting
 * address of a page fault is in lguest_data.cr2, because the Guest cannot
 * read the real %cr2. */
static void oops(struct trapframe *tf)
{
	printk("Oops: trap %u error 0x%x at eip 0x%x", tf->trapnum, tf->errcode, tf->eip);
	if (tf->trapnum == 14)
		printk(" (address 0x%lx)", lguest_data.cr2);
	printk("\n");
	panic("Oops");
}

void trap_init(void)
{
	static const u8 traps[] = { 0, 4, 5, 6, 10, 11, 12, 13, 14, 16, 17, 19 };
	unsigned i;

	lguest_data.blocked_interrupts = ~0UL;
	for (i = 0; i < sizeof(traps); i++)
		install_trap(traps[i], oops, GATE_TRAP, 0);
}
/*:*/

/*G:320 Idling.  The Guest must never spin waiting for something: every
 * emulated instruction costs the machine real time.  HALT is lguest's "sti;
 * hlt": the Host sleeps until an interrupt can be delivered, turns our
 * interrupts on and delivers it.  The caller disables interrupts, checks
 * for work, and halts only if there is none; an interrupt that arrives in
 * between stays pending and wakes the HALT at once, so none is lost. */
void safe_halt(void)
{
	hcall(LHCALL_HALT, 0, 0, 0);
}
/*:*/

/*G:330 The asynchronous hypercall ring, 2.6.23's async_hcall().  Instead of
 * trapping, the Guest writes the call into the next slot of the ring in
 * lguest_data and marks it pending with a zero status byte; the Host runs
 * the queued calls the next time it gets control for any reason.  If the
 * slot is still busy the ring is full, and a normal hypercall makes the Host
 * drain it.  Linux used this for batches of page-table updates; here the
 * "bench" command uses it to show what a call costs when it does not trap. */
void async_hcall(unsigned long call, unsigned long a1, unsigned long a2, unsigned long a3)
{
	static unsigned next_call;
	unsigned long flags = local_irq_save();

	if (lguest_data.hcall_status[next_call] != 0xFF) {
		hcall(call, a1, a2, a3);
	} else {
		lguest_data.hcalls[next_call].eax = call;
		lguest_data.hcalls[next_call].edx = a1;
		lguest_data.hcalls[next_call].ebx = a2;
		lguest_data.hcalls[next_call].ecx = a3;
		wmb();
		lguest_data.hcall_status[next_call] = 0;
		if (++next_call == LHCALL_RING_SIZE)
			next_call = 0;
	}
	local_irq_restore(flags);
}
/*:*/

/*G:340 Time.  lguest gives the Guest two clocks and one timer.
 *
 * The timer is SET_CLOCKEVENT: "raise IRQ 0 in this many nanoseconds",
 * one-shot only, as 2.6.23's clock event device was.  Linux of that era
 * could run it two ways, and so can we.  By default the Guest is
 * "tickless" (CONFIG_NO_HZ): the timer is armed only while the Guest sleeps
 * and has a deadline, say ping's next packet, and cancelled when something
 * else wakes it first.  A busy Guest is never interrupted by a tick it does
 * not need, and an idle one costs the Host nothing at all, which matters
 * when every Guest instruction is emulated.  With "hz=N" on the command line
 * the handler re-arms the timer every 1/N s instead: a classic periodic
 * tick, jiffies and all.  Either way IRQ 0 counts in jiffies.
 *
 * The clocks: if the Host says the TSC is trustworthy it puts its frequency
 * in lguest_data.tsc_khz, and rdtsc is the best clock there is.  Otherwise
 * tsc_khz is 0 and the Guest reads the wall-clock time the Host writes into
 * lguest_data.time on every interrupt delivery: seconds, then nanoseconds,
 * then the seconds again in case they ticked over in between. */
volatile unsigned long jiffies;
unsigned hz;				/* 0: tickless */
static unsigned long tick_ns;
u64 boot_tsc;				/* main()'s first instruction, nearly */
static long boot_sec, boot_nsec;

u64 rdtsc(void)
{
	u32 lo, hi;

	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
	return (u64)hi << 32 | lo;
}

static void read_time(long *sec, long *nsec)
{
	volatile struct lguest_timespec *t = &lguest_data.time;
	long s;

	do {
		s = t->tv_sec;
		*nsec = t->tv_nsec;
	} while (s != t->tv_sec);
	*sec = s;
}

static void timer_interrupt(unsigned irq, void *dev)
{
	(void)irq, (void)dev;
	jiffies++;
	if (hz)
		hcall(LHCALL_SET_CLOCKEVENT, tick_ns, 0, 0);
}

void time_init(void)
{
	const char *v = cmdline_option("hz");
	unsigned long n;

	if (v && parse_uint(v, &n) && n >= 1 && n <= 1000)
		hz = n;
	read_time(&boot_sec, &boot_nsec);
	request_irq(0, timer_interrupt, 0);
	if (hz) {
		tick_ns = 1000000000UL / hz;
		hcall(LHCALL_SET_CLOCKEVENT, tick_ns, 0, 0);
	}
}

/* Sleep until an interrupt, or at most timeout_ms (IDLE_FOREVER: no limit).
 * Called with interrupts disabled, after the caller found nothing to do;
 * returns with them enabled.  A deadline longer than the 32-bit clock event
 * can say (4.29 s) just wakes early, and the caller looks again. */
void idle(unsigned long timeout_ms)
{
	unsigned long j = jiffies;

	if (hz || timeout_ms == IDLE_FOREVER) {
		safe_halt();
		return;
	}
	if (timeout_ms > 4000)
		timeout_ms = 4000;
	hcall(LHCALL_SET_CLOCKEVENT, timeout_ms ? timeout_ms * 1000000UL : 100000, 0, 0);
	safe_halt();
	if (jiffies == j)		/* woken by something else: cancel */
		hcall(LHCALL_SET_CLOCKEVENT, 0, 0, 0);
}

const char *clock_name(void)
{
	return lguest_data.tsc_khz ? "tsc" : "lguest_data.time";
}

u64 clock_ns(void)
{
	long sec, nsec;

	if (lguest_data.tsc_khz)
		return cycles_to_ns(rdtsc() - boot_tsc);
	read_time(&sec, &nsec);
	return (u64)(sec - boot_sec) * 1000000000ULL + nsec - boot_nsec;
}
/*:*/

unsigned long clock_ms(void)
{
	u64 ns = clock_ns();

	do_div(&ns, 1000000);
	return (unsigned long)ns;
}

/* There is no libgcc, so no 64-bit division: like Linux's do_div() on
 * i386, divide the high word first and let one divl finish the job. */
u32 do_div(u64 *n, u32 base)
{
	u32 high = *n >> 32, low = (u32)*n, q_hi = 0, rem;

	if (high >= base) {
		q_hi = high / base;
		high %= base;
	}
	__asm__("divl %4" : "=a"(low), "=d"(rem) : "0"(low), "1"(high), "rm"(base));
	*n = (u64)q_hi << 32 | low;
	return rem;
}

u64 cycles_to_ns(u64 cycles)
{
	u32 khz = lguest_data.tsc_khz;
	u64 frac;
	u32 rem;

	if (!khz)
		return 0;
	rem = do_div(&cycles, khz);		/* cycles is now milliseconds */
	frac = (u64)rem * 1000000;
	do_div(&frac, khz);
	return cycles * 1000000 + frac;
}
