/* Streams of messages from one Guest to another over a shared key (tests/test_dma_streams.py,
 * tests/dmapeer.py, bench/dma.py).  Built with one of
 *   -DROLE_SEND, -DROLE_RECV   a one-way stream of N messages;
 *   -DROLE_PING, -DROLE_PONG   N round trips: PING sends, PONG sends each message back;
 *   -DROLE_LAUNCHER            N sends to a private key: to the Launcher;
 * and optionally -DSECTIONS=s -DSECLEN=l -DNRX=r: a message is s sections of l bytes each
 * (default one of 16), and the receiver has r buffers (default 64, or 8 for messages over a page).
 * The command line says "N [ms]": how many messages, and the receiver's idle timeout or the
 * sender's give-up time (or the round trips' watchdog), in milliseconds.
 *
 * A message starts with 16 bytes: a sequence number, two words derived from it and a checksum of
 * the three.  The sender sends them in order, one SEND_DMA each.  used_len tells it what happened:
 * the whole length means the receiver has it; 0 means there was no free buffer (or no receiver at
 * all), and the sender tries the same message again after a short sleep (SET_CLOCKEVENT + HALT:
 * spinning would only take the CPU from a receiver that is behind), and gives up when nothing has
 * gone through for the give-up time.  So
 * nothing is lost or sent twice.  The receiver puts the numbers back in order (the Host need not
 * fill its buffers in ring order: see rx_peek) and counts anything else: duplicated, too far ahead,
 * corrupt, or still waiting for an earlier one at the end.
 *
 * The receiver binds NRX buffers and takes them in ring order, as far as the Host filled them so.
 * While there is work it runs with interrupts off; when it finds nothing it HALTs, which turns them
 * on until the next interrupt (a DMA's, or its clock).  When its clock says nothing has come for
 * the idle time, the sender is gone, and it reports. */
#include "lguest.h"

#define SHARED		0x400000		/* the shared page */
#define SKEY		(SHARED + 0x100)
#define LAUNCHER_KEY	0x3000			/* private */
#define RX_IRQ		5
#ifndef SECTIONS
#define SECTIONS	1
#endif
#ifndef SECLEN
#define SECLEN		16
#endif
#define MSG		(SECTIONS * SECLEN)
#ifndef NRX			/* a power of two: next_dma wraps at 65536 */
#define NRX		(MSG <= 4096 ? 64 : 8)
#endif
#define RX_BASE		0x200000		/* physical: the receive buffers */
#define TX_BASE		0x300000		/* and the message to send */
#define PROGRESS	4096			/* print progress every this many */
#ifndef RETRIES_AT_ONCE
#define RETRIES_AT_ONCE	0			/* a full receiver: tries before a nap */
#endif

_Static_assert(NRX * MSG <= TX_BASE - RX_BASE, "receive buffers overlap");

static volatile unsigned ticks, dma_irqs;
static void on_irq(struct trapframe *tf)
{
	if (tf->trapnum == 32)
		ticks++;
	else
		dma_irqs++;
#ifdef QUIET_IRQS
	tf->eflags &= ~X86_EFLAGS_IF;		/* stay off after the return, too */
#endif
}

static unsigned long number(const char **s)
{
	unsigned long n = 0;

	while (**s == ' ')
		(*s)++;
	while (**s >= '0' && **s <= '9')
		n = n * 10 + (*(*s)++ - '0');
	return n;
}

static inline unsigned rotl(unsigned x, unsigned r)
{
	return (x << r) | (x >> (32 - r));
}

/* The two words a message carries besides its number, and the checksum of all three. */
static inline unsigned word_a(unsigned seq) { return seq * 2654435761u; }
static inline unsigned word_b(unsigned seq) { return word_a(seq) ^ (seq << 13) ^ 0x5bd1e995u; }
static inline unsigned csum(unsigned seq, unsigned a, unsigned b)
{
	return (seq + rotl(a, 5) + rotl(b, 11)) ^ 0xa5a5a5a5u;
}

static void setup(void)
{
	lguest_init();
	install_trap(32, on_irq, GATE_INTERRUPT, 0);
	install_trap(32 + RX_IRQ, on_irq, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	lguest_data.irq_enabled = 0;
}

/* The clock as a watchdog: a tick every second (or every ms, if less: SET_CLOCKEVENT takes a
 * 32-bit count of nanoseconds), and "idle" once `ms` have passed with no progress from one tick to
 * the next, or four times that before any progress at all. */
static unsigned tick_ms, need, seen_at_tick, idle_ticks, last_ticks;

static __attribute__((unused)) void watchdog_start(unsigned ms)
{
	tick_ms = ms < 1000 ? ms : 1000;
	need = (ms + tick_ms - 1) / tick_ms;
	hcall(LHCALL_SET_CLOCKEVENT, tick_ms * 1000000, 0, 0);
}

/* Called when there is nothing to do: 1 when it is time to give up. */
static __attribute__((unused)) int watchdog_idle(unsigned progress)
{
	if (ticks == last_ticks)
		return 0;
	last_ticks = ticks;
	if (progress != seen_at_tick) {
		seen_at_tick = progress;
		idle_ticks = 0;
	} else if (++idle_ticks >= need * (progress ? 1 : 4)) {
		return 1;
	}
	hcall(LHCALL_SET_CLOCKEVENT, tick_ms * 1000000, 0, 0);
	return 0;
}

/* A nap of about `us` microseconds, with the clock. */
static __attribute__((unused)) void nap(unsigned us)
{
	unsigned t = ticks;

	hcall(LHCALL_SET_CLOCKEVENT, us * 1000, 0, 0);
	while (ticks == t)
		hcall(LHCALL_HALT, 0, 0, 0);
	lguest_data.irq_enabled = 0;
	if (tick_ms) {			/* that was not the watchdog's tick: start it again */
		last_ticks = ticks;
		hcall(LHCALL_SET_CLOCKEVENT, tick_ms * 1000000, 0, 0);
	}
}

/* ---- receiving ---- */
static struct lguest_dma rx[NRX];
static unsigned r_next;

static __attribute__((unused)) void rx_bind(void)
{
	for (unsigned i = 0; i < NRX; i++)
		for (unsigned j = 0; j < SECTIONS; j++) {
			rx[i].addr[j] = RX_BASE + (i * SECTIONS + j) * SECLEN;
			rx[i].len[j] = SECLEN;
		}
	if (hcall(LHCALL_BIND_DMA, SKEY, __pa(rx), (NRX << 8) | RX_IRQ) != 1)
		lguest_crash("bind failed");
}

/* The next full buffer's first words, or 0 if there is none; its length in *len.  The Host fills
 * the ring in order only while nothing changes under it: it takes the first free buffer from its
 * next_dma on, and one we free while it is looking can be passed over, to be filled a lap later.
 * So when the next buffer is empty, we look at all the others before we call the ring empty. */
static __attribute__((unused)) unsigned *rx_peek(unsigned *len)
{
	for (unsigned i = 0; i < NRX; i++) {
		unsigned j = (r_next + i) % NRX;

		*len = rx[j].used_len;
		if (*len) {
			r_next = j;
			return __va(rx[j].addr[0]);
		}
	}
	return 0;
}

static __attribute__((unused)) void rx_free(void)
{
	rx[r_next].used_len = 0;
	r_next = (r_next + 1) % NRX;
}

/* Putting the stream back in order: `expect` is the first message not yet seen, and a message up
 * to WINDOW ahead of it is held (as a bit) until the ones before it arrive.  0: in order; 1: early,
 * held; 2: seen before; 3: too far ahead to be one the sender could have sent. */
#define WINDOW 256
static unsigned expect, held, early[WINDOW / 32];

static __attribute__((unused)) int accept(unsigned seq)
{
	unsigned w = seq % WINDOW, bit = 1u << (w % 32);

	if (seq < expect)
		return 2;
	if (seq - expect >= WINDOW)
		return 3;
	if (seq != expect) {
		if (early[w / 32] & bit)
			return 2;
		early[w / 32] |= bit;
		held++;
		return 1;
	}
	for (expect++; ; expect++) {
		w = expect % WINDOW;
		bit = 1u << (w % 32);
		if (!(early[w / 32] & bit))
			return 0;
		early[w / 32] &= ~bit;
		held--;
	}
}

/* ---- sending ---- */
static struct lguest_dma tx;
static unsigned *txmsg = __va(TX_BASE);

static __attribute__((unused)) void tx_setup(void)
{
	for (unsigned j = 0; j < SECTIONS; j++) {
		tx.addr[j] = TX_BASE + j * SECLEN;
		tx.len[j] = SECLEN;
	}
}

static __attribute__((unused)) void tx_fill(unsigned seq)
{
	txmsg[0] = seq;
	txmsg[1] = word_a(seq);
	txmsg[2] = word_b(seq);
	txmsg[3] = csum(seq, txmsg[1], txmsg[2]);
}

static unsigned retries, sleeps;

/* Send the message until it is taken: 1, or 0 when nothing went through for giveup_ms. */
static __attribute__((unused)) int tx_send(unsigned long key, unsigned giveup_ms)
{
	unsigned fails = 0, slept_us = 0;

	for (;;) {
		tx.used_len = 0;
		hcall(LHCALL_SEND_DMA, key, __pa(&tx), 0);
		if (tx.used_len == MSG)
			return 1;
		retries++;
		if (++fails <= RETRIES_AT_ONCE)
			continue;
		if (slept_us >= giveup_ms * 1000)
			return 0;
		sleeps++;
		slept_us += 500;
		nap(500);
	}
}

/* Does this message say what message `seq` says? */
static inline int msg_ok(const unsigned *m, unsigned seq)
{
	return m[0] == seq && m[1] == word_a(seq) && m[2] == word_b(seq)
		&& m[3] == csum(seq, m[1], m[2]);
}

int main(void)
{
	const char *cmd = boot_cmdline();
	unsigned n = number(&cmd), ms = number(&cmd);

	setup();
#if defined(ROLE_RECV)
	unsigned count = 0, ooo = 0, dups = 0, far = 0, bad = 0, sum = 0, halts = 0;

	rx_bind();
	printk("ready\n");
	watchdog_start(ms);
	while (count < n) {
		unsigned len, *m = rx_peek(&len);

		if (m) {
			unsigned seq = m[0];

			if (len != MSG || !msg_ok(m, seq)) {
				bad++;
			} else {
				switch (accept(seq)) {
				case 0: sum += m[3]; break;
				case 1: sum += m[3]; ooo++; break;
				case 2: dups++; break;
				default: far++; break;
				}
			}
			count++;
			rx_free();
			if (count % PROGRESS == 0)
				printk("progress %u\n", count);
			continue;
		}
		if (watchdog_idle(count))
			break;
		halts++;
		hcall(LHCALL_HALT, 0, 0, 0);	/* "sti; hlt": the interrupt runs on_irq... */
		lguest_data.irq_enabled = 0;	/* ...and we work with interrupts off */
	}
	hcall(LHCALL_SET_CLOCKEVENT, 0, 0, 0);
	printk("recv count=%u expect=%u held=%u ooo=%u dups=%u far=%u bad=%u sum=%u idle=%u halts=%u "
	       "irqs=%u\n", count, expect, held, ooo, dups, far, bad, sum, count < n, halts, dma_irqs);
#elif defined(ROLE_SEND) || defined(ROLE_LAUNCHER)
#ifdef ROLE_SEND
#define KEY SKEY
#else
#define KEY LAUNCHER_KEY
#endif
	unsigned seq, sum = 0, gaveup = 0;

	tx_setup();
	printk("start\n");
	for (seq = 0; seq < n; seq++) {
		tx_fill(seq);
		if (!tx_send(KEY, ms)) {
			gaveup = 1;
			break;
		}
		sum += txmsg[3];
		if ((seq + 1) % PROGRESS == 0)
			printk("progress %u\n", seq + 1);
	}
	printk("send sent=%u sum=%u retries=%u sleeps=%u gaveup=%u\n", seq, sum, retries, sleeps, gaveup);
#elif defined(ROLE_PING) || defined(ROLE_PONG)
	unsigned i, bad = 0, halts = 0, gaveup = 0;

	rx_bind();
	tx_setup();
	printk("ready\n");
	printk("start\n");
	watchdog_start(ms);
	for (i = 0; i < n && !gaveup; i++) {
#ifdef ROLE_PING
		tx_fill(i);
		if (!tx_send(SKEY, ms)) {
			gaveup = 1;
			break;
		}
#endif
		unsigned len, *m;

		while (!(m = rx_peek(&len))) {
			if (watchdog_idle(i + 1)) {	/* the other end is gone */
				gaveup = 1;
				break;
			}
			halts++;
			hcall(LHCALL_HALT, 0, 0, 0);
			lguest_data.irq_enabled = 0;
		}
		if (!m)
			break;
		bad += len != MSG || !msg_ok(m, i);
		rx_free();
#ifdef ROLE_PONG
		tx_fill(i);
		if (!tx_send(SKEY, ms)) {
			gaveup = 1;
			break;
		}
#endif
	}
	hcall(LHCALL_SET_CLOCKEVENT, 0, 0, 0);
	printk("done trips=%u bad=%u halts=%u retries=%u sleeps=%u gaveup=%u irqs=%u\n",
	       i, bad, halts, retries, sleeps, gaveup, dma_irqs);
#endif
	return 0;
}
