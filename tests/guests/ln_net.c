/* The Launcher's network test Guest (tests/test_launcher_net.py), in the
 * 2.6.23 network driver's way: it writes its MAC into its slot of the
 * device page, binds receive buffers at its slot's key, and sends an
 * Ethernet frame (type 0x88B5) to a peer's key until it has both had its
 * frame taken and received one of the same type; then it powers off.
 * With --tunnet the peer is slot 0 (the Launcher, in front of a TAP); with
 * --sharenet it is the first other slot that fills in. */
#include "ln_lib.h"

#define ETH_TYPE	0x88B5
#define NRX		2
#define FRAME_LEN	64

static u8 rxbuf[NRX][PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static u8 txbuf[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static struct lguest_dma rx[NRX], tx;
static volatile unsigned net_irqs;
static u8 mac[6];

static void net_irq(struct trapframe *tf)
{
	(void)tf;
	net_irqs++;
}

static void print_mac(const char *what, const volatile u8 *m)
{
	printk("%s %x:%x:%x:%x:%x:%x\n", what, m[0], m[1], m[2], m[3], m[4], m[5]);
}

/* A received frame of ours?  Print it and free the buffer. */
static int poll_rx(void)
{
	int got = 0;

	for (int i = 0; i < NRX; i++) {
		unsigned n = rx[i].used_len;
		u8 *f = rxbuf[i];

		if (!n)
			continue;
		if (n >= 14 && n <= 1514 && f[12] == (ETH_TYPE >> 8) && f[13] == (ETH_TYPE & 0xFF)) {
			char text[48];
			unsigned t = n - 14 < sizeof(text) - 1 ? n - 14 : sizeof(text) - 1;

			memcpy(text, f + 14, t);
			text[t] = 0;
			for (unsigned k = 0; k < t; k++)
				if (text[k] < ' ' || text[k] > '~')
					text[k] = 0;
			printk("ln: received %u bytes [%s]\n", n, text);
			got = 1;
		}
		wmb();
		rx[i].used_len = 0;
	}
	return got;
}

int main(void)
{
	struct lguest_device_desc *d;
	volatile u8 (*slots)[6];
	unsigned long key;
	int n, own, peer = -1, received = 0, sent = 0;

	lguest_init();
	ln_setup_irqs();
	d = map_devices();
	n = find_device(d, LGUEST_DEVICE_T_NET);
	if (n < 0)
		lguest_crash("ln: no network device");
	slots = dev_page(&d[n]);
	key = dev_page_pa(&d[n]);
	own = d[n].features & 0xFFF;
	mac[0] = 2;
	mac[2] = lguest_data.guestid & 0xFF;
	mac[3] = lguest_data.guestid >> 8;
	mac[5] = own;
	printk("ln: net dev %d features %x slot %d\n", n, d[n].features, own);

	install_trap(32 + n + 1, net_irq, GATE_INTERRUPT, 0);
	for (int i = 0; i < NRX; i++) {
		rx[i].addr[0] = __pa(rxbuf[i]);
		rx[i].len[0] = 1514;
	}
	bind_dma(key + 4 * own, rx, NRX, n + 1);
	for (int i = 0; i < 6; i++)
		slots[own][i] = mac[i];
	print_mac("ln: own mac", slots[own]);

	/* The frame: broadcast, from us, our type, a greeting. */
	memset(txbuf, 0xFF, 6);
	memcpy(txbuf + 6, mac, 6);
	txbuf[12] = ETH_TYPE >> 8;
	txbuf[13] = ETH_TYPE & 0xFF;
	memset(txbuf + 14, 0, FRAME_LEN - 14);
	memcpy(txbuf + 14, "hello from slot ", 16);
	txbuf[30] = '0' + own;

	for (int tries = 0; tries < 200; tries++) {
		if (peer < 0) {
			for (int s = 0; s < PAGE_SIZE / 6; s++)
				if (s != own && slots[s][0]) {
					peer = s;
					printk("ln: peer slot %d\n", peer);
					print_mac("ln: peer mac", slots[peer]);
					break;
				}
		}
		if (peer >= 0 && !sent) {
			tx.used_len = 0;
			tx.addr[0] = __pa(txbuf);
			tx.len[0] = FRAME_LEN;
			tx.len[1] = 0;
			send_dma(key + 4 * peer, &tx);
			if (tx.used_len == FRAME_LEN) {
				sent = 1;
				printk("ln: sent %u bytes to slot %d\n", (unsigned)tx.used_len, peer);
			}
		}
		if (poll_rx())
			received = 1;
		if (sent && received)
			break;
		sleep_ms(50);
		if (poll_rx())
			received = 1;
		if (sent && received)
			break;
	}
	printk("ln: net done sent %d received %d irqs %u\n", sent, received, net_irqs);
	return 0;
}
