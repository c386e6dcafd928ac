/* DMA scenarios, one per MODE (built with -DMODE=n by tests/test_dma.py).
 *
 * The Launcher (test) drives the order of events across Guests with "asks": a
 * SEND_DMA to the private key ASK_KEY carrying a tag in addr[0] (and an
 * argument in addr[1]).  read() returns it to the test, which may wait for
 * another Guest, look at the Host, or answer in used_len before resuming us.
 *
 * Memory: 4 MB of RAM, then one device page at 0x400000 (the shared page in
 * the two-Guest scenarios: keys there are shared), pfn_limit 0x401, and one
 * more page of Launcher memory at 0x401000 beyond pfn_limit. */
#include "lguest.h"

#define ASK_KEY		0x2000		/* private: read() returns it to the test */
#define PKEY		0x3000		/* private keys for BIND/GETDMA */
#define PKEY2		0x3004
#define SHARED		0x400000	/* the device page */
#define SKEY		(SHARED + 0x100)
#define RX_IRQ		5
#define BEYOND		0x401000	/* Launcher memory beyond pfn_limit */

enum { READY = 1, BOUND, WAIT, SENT, UNBOUND, WAIT2, READY2 };

static struct lguest_dma ask_dma;
static __attribute__((unused)) unsigned ask(unsigned tag, unsigned arg)
{
	ask_dma.used_len = 0;
	ask_dma.addr[0] = tag;
	ask_dma.addr[1] = arg;
	ask_dma.len[0] = 0;
	hcall(LHCALL_SEND_DMA, ASK_KEY, __pa(&ask_dma), 0);
	return ask_dma.used_len;
}

static volatile unsigned irqs[LGUEST_IRQS];
static void on_irq(struct trapframe *tf)
{
	irqs[tf->trapnum - 32]++;
}

static void irq_setup(void)
{
	for (unsigned v = 32; v < 32 + 8; v++)
		install_trap(v, on_irq, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	lguest_data.irq_enabled = X86_EFLAGS_IF;
}

static __attribute__((unused)) unsigned bind(unsigned long key, unsigned long dmas, unsigned num, unsigned irq)
{
	return hcall(LHCALL_BIND_DMA, key, dmas, (num << 8) | irq);
}

/* Receive buffers: NRX descriptors, each one 64-byte section (or two). */
#define NRX 4
static struct lguest_dma rx[NRX];
static char rxbuf[NRX][64] __attribute__((aligned(64)));

static __attribute__((unused)) void rx_setup(unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		rx[i].used_len = 0;
		rx[i].addr[0] = __pa(rxbuf[i]);
		rx[i].len[0] = 64;
		rx[i].len[1] = 0;
	}
}

static __attribute__((unused)) void rx_print(const char *who, unsigned n)
{
	printk("%s irq=%u timer=%u", who, irqs[RX_IRQ], irqs[0]);
	for (unsigned i = 0; i < n; i++) {
		rxbuf[i][63] = 0;
		printk(" rx%u=%u:%s", i, (unsigned)rx[i].used_len, rx[i].used_len ? rxbuf[i] : "");
	}
	printk("\n");
}

static struct lguest_dma tx;
static __attribute__((unused)) char payload[] = "payload";

static __attribute__((unused)) unsigned send(unsigned long key, struct lguest_dma *d)
{
	d->used_len = 0;
	hcall(LHCALL_SEND_DMA, key, __pa(d), 0);
	return d->used_len;
}

static __attribute__((unused)) unsigned send_one(unsigned long key, unsigned long addr, unsigned len)
{
	tx.addr[0] = addr;
	tx.len[0] = len;
	tx.len[1] = 0;
	return send(key, &tx);
}

int main(void)
{
	lguest_init();
	irq_setup();

#if MODE == 1	/* BIND_DMA: every return value */
	rx_setup(1);
	printk("bind=%u", bind(PKEY, __pa(rx), 1, 3));
	printk(" irq32=%u", bind(PKEY, __pa(rx), 1, 32));
	printk(" irq32_badkey=%u", bind(PKEY + 2, __pa(rx), 1, 32));	/* irq checked first */
	printk(" unbind_other=%u", bind(PKEY, __pa(rx) + 100, 0, 0));
	printk(" unbind=%u", bind(PKEY, __pa(rx), 0, 0));
	printk(" unbind_again=%u", bind(PKEY, __pa(rx), 0, 0));
	unsigned ok = 0;
	for (unsigned i = 0; i < 32; i++)
		ok += bind(PKEY + 4 * i, __pa(rx), 1, 3);
	printk(" bound=%u 33rd=%u", ok, bind(PKEY2 + 0x100, __pa(rx), 1, 3));
	ask(1, 0);					/* the test counts the records */
	printk(" unbind=%u", bind(PKEY + 8, __pa(rx), 0, 0));
	printk(" rebind=%u\n", bind(PKEY2 + 0x100, __pa(rx), 1, 4));
	bind(PKEY + 2, __pa(rx), 1, 3);			/* an unaligned key kills */
	printk("still running\n");
#elif MODE == 2	/* a key outside the Launcher's memory */
	printk("bind=%u\n", bind(0x402000, __pa(rx), 1, 3));
#elif MODE == 3	/* GETDMA from the Launcher's side */
	rx_setup(NRX);
	ask(1, 0);				/* GETDMA with nothing bound: ENOENT */
	bind(PKEY, __pa(rx), 3, 7);
	bind(PKEY2, __pa(&rx[3]), 0, 6);	/* num 0 */
	ask(2, __pa(rx));			/* GETDMA: buffer by buffer, then the last one */
	printk("irq7=%u rx0=%u:%s\n", irqs[7], (unsigned)rx[0].used_len, rxbuf[0]);
	bind(PKEY, __pa(rx), 0, 0);
	ask(5, 0);				/* unbound again: ENOENT */
	bind(PKEY, __pa(&rx[1]), 1, 3);
	bind(PKEY, __pa(&rx[2]), 1, 4);		/* the most recent binding of a key wins */
	ask(3, __pa(rx));
	ask(4, 0);				/* GETDMA with a bad key kills */
	printk("still running\n");
#elif MODE == 4	/* GETDMA on an array outside memory */
	bind(PKEY, 0x7ff000, 2, 7);
	ask(1, 0);
	printk("still running\n");
#elif MODE == 5	/* alone on a shared key: no receiver, not even ourselves */
	rx_setup(1);
	tx.used_len = 0x1234;
	tx.addr[0] = __pa(payload);
	tx.len[0] = 7;
	hcall(LHCALL_SEND_DMA, SKEY, __pa(&tx), 0);
	printk("nobody=%x", (unsigned)tx.used_len);
	printk(" bind=%u", bind(SKEY, __pa(rx), 1, RX_IRQ));
	tx.used_len = 0x1234;
	hcall(LHCALL_SEND_DMA, SKEY, __pa(&tx), 0);
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	printk(" self=%x irq=%u rx0=%u\n", (unsigned)tx.used_len, irqs[RX_IRQ], (unsigned)rx[0].used_len);
#elif MODE == 6	/* an unaligned shared key */
	printk("used=%u\n", send_one(SKEY, __pa(payload), 7));
	send_one(SKEY + 2, __pa(payload), 7);
	printk("still running\n");
#elif MODE == 7	/* keys are checked against the Launcher's memory, not pfn_limit */
	printk("beyond=%u\n", send_one(BEYOND + 0xffc, __pa(payload), 7));
	send_one(BEYOND + 0x1000, __pa(payload), 7);
	printk("still running\n");

/* ---- Two or three Guests on one shared key ---- */
#elif MODE == 10	/* receiver: sleeps in HALT until the DMA's interrupt */
	rx[0].used_len = 0;
	rx[0].addr[0] = __pa(rxbuf[0]);		/* two sections: 4 bytes, then 60 */
	rx[0].len[0] = 4;
	rx[0].addr[1] = __pa(rxbuf[0]) + 4;
	rx[0].len[1] = 60;
	rx[0].len[2] = 0;
	printk("bind=%u\n", bind(SKEY, __pa(rx), 1, RX_IRQ));
	ask(BOUND, 0);
	hcall(LHCALL_SET_CLOCKEVENT, 3000000000UL, 0, 0);	/* in case nothing comes */
	while (!irqs[RX_IRQ] && !irqs[0])
		hcall(LHCALL_HALT, 0, 0, 0);
	hcall(LHCALL_SET_CLOCKEVENT, 0, 0, 0);
	rx_print("woke", 1);
#elif MODE == 11	/* sender: two sections to a receiver with two others */
	static char hello[] = "hello, ", guest[] = "guest";
	ask(READY, 0);
	tx.addr[0] = __pa(hello);
	tx.len[0] = 7;
	tx.addr[1] = __pa(guest);
	tx.len[1] = 6;				/* with the NUL */
	tx.len[2] = 0;
	printk("used=%u\n", send(SKEY, &tx));
#elif MODE == 12	/* receiver: bind, then report once the sender is done */
#ifndef RX_DMAS
#define RX_DMAS __pa(rx)
#endif
#ifndef RX_NUM
#define RX_NUM 2
#endif
	rx_setup(2);
#ifdef RX_ADDR
	rx[0].addr[0] = RX_ADDR;
	rx[0].len[0] = RX_LEN;
#endif
#ifdef RX_FULL
	rx[0].used_len = 0xdead;
	rx[1].used_len = 0xbeef;
#endif
	ask(READY, 0);
	printk("bind=%u\n", bind(SKEY, RX_DMAS, RX_NUM, RX_IRQ));
	ask(BOUND, 0);
	ask(WAIT, 0);
	rx_print("r", 2);
#ifdef UNBIND
	printk("unbind=%u\n", bind(SKEY, RX_DMAS, 0, 0));
	ask(UNBOUND, 0);
#endif
#if defined(UNBIND) || defined(ROUNDS2)
	ask(WAIT2, 0);
	rx_print("r", 2);
#endif
#elif MODE == 13	/* sender: one send, as the flags say */
#ifndef TX_ADDR
#define TX_ADDR __pa(payload)
#define TX_LEN 8
#endif
#ifndef TX_DMA
#define TX_DMA __pa(&tx)
#endif
	ask(READY, 0);
#ifdef SELF_BIND	/* bound to the key we send on, most recently of all */
	rx_setup(1);
	printk("bind=%u\n", bind(SKEY, __pa(rx), 1, RX_IRQ));
#endif
	tx.used_len = 0;
	tx.addr[0] = TX_ADDR;
	tx.len[0] = TX_LEN;
	tx.len[1] = 0;
	hcall(LHCALL_SEND_DMA, SKEY, TX_DMA, 0);
	printk("used=%u\n", (unsigned)tx.used_len);
	ask(SENT, 0);
#ifdef TWICE
	ask(READY2, 0);
	static char second[] = "second";
	printk("used=%u\n", send_one(SKEY, __pa(second), 7));
#endif
#ifdef SELF_BIND
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	rx_print("self", 1);
#endif
#elif MODE == 14	/* sender: a ping (an empty send), then a real one */
	ask(READY, 0);
	tx.len[0] = 0;
	printk("ping=%u\n", send(SKEY, &tx));
	ask(SENT, 0);
	ask(READY2, 0);
	printk("real=%u\n", send_one(SKEY, __pa(payload), 8));
#endif
	return 0;
}
