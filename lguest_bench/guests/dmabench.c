/*M:960 The Guest-to-Guest benchmark Guest (lguest_bench/devices.py).  Two of
 * them run in two Launcher processes and talk over a key in a page of a file
 * both Launchers map at Guest-physical 0x400000.  Built with one of
 *   -DROLE_PING, -DROLE_PONG   round trips: PING sends a 16-byte message, PONG
 *                              sends it back, and only then does PING send the
 *                              next;
 *   -DROLE_SEND, -DROLE_RECV   a one-way stream of 16 x 4 KiB sections per send
 *                              (a section may not cross a page: the most one
 *                              SEND_DMA can carry), into 8 receive buffers.
 * The command line says "N LAPS MS": N operations per lap, LAPS laps, and the
 * idle time in milliseconds after which a Guest decides its peer is gone.
 *
 * The timed end (PING, SEND) sends an empty DMA to the private key 0x2000
 * before the first lap and after each one, as bench.c does: its Launcher
 * notes the time of each.  Every message says which it is in its first and
 * last section and in one more that moves with its number, and the receiving
 * end checks that and keeps a bitmap of the numbers it has had, so nothing
 * lost, doubled or garbled goes uncounted: the final report line carries the
 * counts. :*/
#include "lguest.h"

#define SHARED		0x400000
#define SKEY		(SHARED + 0x100)
#define MARK_KEY	0x2000
#define RX_IRQ		5
#define RX_BASE		0x200000
#define TX_BASE		0x300000
#define MAGIC		0x6c674442u		/* "lgDB" */

#if defined(ROLE_SEND) || defined(ROLE_RECV)
#define SECTIONS	16
#define SECLEN		4096
#define NRX		8
#else
#define SECTIONS	1
#define SECLEN		16
#define NRX		4
#endif
#define MSG		(SECTIONS * SECLEN)
#define MAXMSG		65536			/* the receiver's bitmap of seen messages */

_Static_assert(NRX * MSG <= TX_BASE - RX_BASE, "receive buffers overlap");

static volatile unsigned ticks, dma_irqs;
static struct lguest_dma rx[NRX], tx, mark_dma;
static unsigned r_next, retries, naps, halts;

static void on_irq(struct trapframe *tf)
{
	if (tf->trapnum == 32)
		ticks++;
	else
		dma_irqs++;
}

static unsigned number(const char **s)
{
	unsigned n = 0;

	while (**s == ' ')
		(*s)++;
	while (**s >= '0' && **s <= '9')
		n = n * 10 + (*(*s)++ - '0');
	return n;
}

static __attribute__((unused)) void mark(void)
{
	mark_dma.used_len = 0;
	hcall(LHCALL_SEND_DMA, MARK_KEY, __pa(&mark_dma), 0);
}

/* Section j of message seq starts with seq and a word derived from both, and
 * ends with another. */
static inline unsigned word_a(unsigned seq, unsigned j) { return (seq * 2654435761u) ^ (j << 24) ^ MAGIC; }
static inline unsigned word_z(unsigned seq, unsigned j) { return ~(seq + j * 0x10001u); }
static unsigned seen_msg[MAXMSG / 32];

/* A clock tick every second, or every `ms` if that is less, as a watchdog:
 * idle() says "give up" once that long has passed with no progress. */
static unsigned tick_ms, need, last_ticks, seen, idle_ticks;

static void watchdog_start(unsigned ms)
{
	tick_ms = ms < 1000 ? ms : 1000;
	need = (ms + tick_ms - 1) / tick_ms;
	hcall(LHCALL_SET_CLOCKEVENT, tick_ms * 1000000, 0, 0);
}

static int idle(unsigned progress)
{
	if (ticks == last_ticks)
		return 0;
	last_ticks = ticks;
	if (progress != seen) {
		seen = progress;
		idle_ticks = 0;
	} else if (++idle_ticks >= need) {
		return 1;
	}
	hcall(LHCALL_SET_CLOCKEVENT, tick_ms * 1000000, 0, 0);
	return 0;
}

/* Sleep until an interrupt: HALT turns interrupts on until one comes ("sti;
 * hlt"); we work with them off. */
static void halt(void)
{
	halts++;
	hcall(LHCALL_HALT, 0, 0, 0);
	lguest_data.irq_enabled = 0;
}

static void setup(void)
{
	lguest_init();
	install_trap(32, on_irq, GATE_INTERRUPT, 0);
	install_trap(32 + RX_IRQ, on_irq, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	lguest_data.irq_enabled = 0;
	for (unsigned j = 0; j < SECTIONS; j++) {
		tx.addr[j] = TX_BASE + j * SECLEN;
		tx.len[j] = SECLEN;
	}
#if !defined(ROLE_SEND)
	for (unsigned i = 0; i < NRX; i++)
		for (unsigned j = 0; j < SECTIONS; j++) {
			rx[i].addr[j] = RX_BASE + (i * SECTIONS + j) * SECLEN;
			rx[i].len[j] = SECLEN;
		}
	if (hcall(LHCALL_BIND_DMA, SKEY, __pa(rx), (NRX << 8) | RX_IRQ) != 1)
		lguest_crash("bind failed");
#endif
}

/* The next full receive buffer, or -1.  The Host need not fill the ring in
 * order (a buffer freed while it looks can be passed over), so look at all. */
static int rx_peek(void)
{
	for (unsigned i = 0; i < NRX; i++) {
		unsigned k = (r_next + i) % NRX;

		if (rx[k].used_len) {
			r_next = k;
			return k;
		}
	}
	return -1;
}

/* The sections a message carries its words in: the first, the last, and one
 * that moves with the message number, so 16 messages in a row cover them all
 * (each checked section costs the emulated Guest instructions). */
static inline unsigned checked(unsigned seq, unsigned c)
{
	return c == 0 ? 0 : c == 1 ? SECTIONS - 1 : seq % SECTIONS;
}

/* Is buffer k a whole message, one of the `total` we expect, and not one seen
 * before?  (The first two and the last word of each checked section.) */
static int rx_ok(unsigned k, unsigned total)
{
	unsigned seq = *(unsigned *)__va(rx[k].addr[0]), bit = 1u << (seq % 32);

	if (rx[k].used_len != MSG || seq >= total || (seen_msg[seq / 32] & bit))
		return 0;
	for (unsigned c = 0; c < (SECTIONS > 1 ? 3 : 1); c++) {
		unsigned j = checked(seq, c), *w = __va(rx[k].addr[j]);

		if (w[0] != seq || w[1] != word_a(seq, j) || w[SECLEN / 4 - 1] != word_z(seq, j))
			return 0;
	}
	seen_msg[seq / 32] |= bit;
	return 1;
}

static void rx_free(void)
{
	rx[r_next].used_len = 0;
	r_next = (r_next + 1) % NRX;
}

static __attribute__((unused)) void tx_fill(unsigned seq)
{
	for (unsigned c = 0; c < (SECTIONS > 1 ? 3 : 1); c++) {
		unsigned j = checked(seq, c), *w = __va(TX_BASE + j * SECLEN);

		w[0] = seq;
		w[1] = word_a(seq, j);
		w[SECLEN / 4 - 1] = word_z(seq, j);
	}
}

/* Send until the peer takes it (used_len is the whole message); when it has
 * no free buffer, nap half a millisecond and try again.  0: given up. */
static __attribute__((unused)) int tx_send(unsigned progress)
{
	for (;;) {
		unsigned t = ticks;

		tx.used_len = 0;
		hcall(LHCALL_SEND_DMA, SKEY, __pa(&tx), 0);
		if (tx.used_len == MSG)
			return 1;
		retries++;
		if (idle(progress))
			return 0;
		naps++;
		hcall(LHCALL_SET_CLOCKEVENT, 500000, 0, 0);
		while (ticks == t)
			halt();
		last_ticks = ticks;
		hcall(LHCALL_SET_CLOCKEVENT, tick_ms * 1000000, 0, 0);
	}
}

/* Wait for the next message and take it: 1 if it is good (see rx_ok), 0 if
 * not, -1 if the peer has gone quiet. */
static __attribute__((unused)) int rx_take(unsigned total, unsigned progress)
{
	int k, ok;

	while ((k = rx_peek()) < 0) {
		if (idle(progress))
			return -1;
		halt();
	}
	ok = rx_ok(k, total);
	rx_free();
	return ok;
}

int main(void)
{
	const char *cmd = boot_cmdline();
	unsigned n = number(&cmd), laps = number(&cmd), ms = number(&cmd);
	unsigned total = n * laps, done = 0, bad = 0, gaveup = 0;

	if (total > MAXMSG)
		lguest_crash("too many messages");
	setup();
	printk("ready\n");
	watchdog_start(ms ? ms : 10000);
#if defined(ROLE_PING) || defined(ROLE_SEND)
	mark();
	for (unsigned lap = 0; lap < laps && !gaveup; lap++) {
		for (unsigned i = 0; i < n; i++, done++) {
			tx_fill(done);
			if (!tx_send(done)) {
				gaveup = 1;
				break;
			}
#ifdef ROLE_PING
			int r = rx_take(total, done + 1);

			if (r < 0) {
				gaveup = 1;
				break;
			}
			bad += !r;
#endif
		}
		if (!gaveup)
			mark();
	}
#elif defined(ROLE_PONG)
	for (; done < total; done++) {
		int r = rx_take(total, done);

		if (r < 0) {
			gaveup = 1;
			break;
		}
		bad += !r;
		tx_fill(done);
		if (!tx_send(done + 1)) {
			gaveup = 1;
			break;
		}
	}
#elif defined(ROLE_RECV)
	/* The Host may fill the ring out of order, so messages can be taken out
	 * of order; the bitmap still counts each once. */
	for (; done < total; done++) {
		int r = rx_take(total, done);

		if (r < 0) {
			gaveup = 1;
			break;
		}
		bad += !r;
	}
#else
#error "build with -DROLE_PING, -DROLE_PONG, -DROLE_SEND or -DROLE_RECV"
#endif
	hcall(LHCALL_SET_CLOCKEVENT, 0, 0, 0);
	printk("done ops=%u bad=%u gaveup=%u retries=%u naps=%u halts=%u irqs=%u\n",
	       done, bad, gaveup, retries, naps, halts, dma_irqs);
	return 0;
}
