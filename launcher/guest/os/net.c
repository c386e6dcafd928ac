#include "os.h"

/*D:300 The network device (2.6.23's drivers/net/lguest_net.c) is the
 * cleverest of the three, because it needs no Launcher in the data path at
 * all when Guests talk to each other.
 *
 * The device has one page: an array of 682 six-byte MAC addresses, one
 * "slot" per Guest on this network.  With --sharenet that page is a file
 * every Launcher maps shared, so every Guest sees the same table.  Slot i's
 * DMA key is the page's address plus 4 * i, and since the page is shared
 * memory the Host treats those keys as shared: a SEND_DMA to a peer's key
 * goes straight into the receive buffers that peer bound there.  Our own
 * slot number is in the low bits of the device's features.
 *
 * With --tunnet the page is private and the Launcher sits in slot 0 with
 * its TAP device's MAC address and the "promiscuous" bit (bit 0 of the
 * first byte) set, so everything we send ends up with the Launcher, which
 * writes it to the TAP. */
struct lguest_net {
	u8 mac[ETH_ALEN];
};

#define NUM_SKBS	8
#define PROMISC_BIT	0x01
#define MAX_NETDEVS	2

struct net_device {
	struct lguest_device *lgdev;
	char name[8];
	u8 mac[ETH_ALEN];
	unsigned long peer_phys;
	volatile struct lguest_net *peer;
	unsigned mapsize, me, irq;
	u16 features;
	struct lguest_dma dma[NUM_SKBS];
	u8 (*rxbuf)[ETH_FRAME_LEN];		/* NUM_SKBS of them */
	unsigned long rx_packets, rx_bytes, rx_length_errors, rx_dropped;
	unsigned long tx_packets, tx_bytes, tx_carrier_errors;
};

static struct net_device netdevs[MAX_NETDEVS];
static unsigned nr_netdevs;
/*:*/

/* Received frames wait here for net_poll(), outside the interrupt handler:
 * our netif_rx() and its backlog queue. */
#define RXQ_LEN 16
static struct rxq_entry {
	struct net_device *dev;
	unsigned len;
	u8 data[ETH_FRAME_LEN];
} *rxq;
static volatile unsigned rxq_head, rxq_tail;

static unsigned peer_key(const struct net_device *nd, unsigned peernum)
{
	return nd->peer_phys + 4 * peernum;
}

/*D:310 A receive buffer is 1514 bytes, a whole Ethernet frame without its
 * checksum, described by its own lguest_dma: split at the page boundary if it
 * crosses one, so one or two sections.  Filling a slot ends with used_len =
 * 0, after a write barrier: from that moment the Host may fill it. */
static void fill_slot(struct net_device *nd, unsigned slot)
{
	buf_to_dma(nd->rxbuf[slot], ETH_FRAME_LEN, &nd->dma[slot]);
	wmb();
	nd->dma[slot].used_len = 0;
}
/*:*/

/*D:320 The receive interrupt looks at all eight buffers: any with a non-zero
 * used_len holds a frame of that length.  A length outside 14..1514 cannot be
 * an Ethernet frame and is dropped (the Launcher's GETDMA leaves the IRQ
 * number in used_len until it writes the real count, for one).  Every used
 * buffer is refilled at once, so the Host always has somewhere to put the
 * next frame. */
static void lguestnet_rcv(unsigned irq, void *dev)
{
	struct net_device *nd = dev;
	unsigned i;

	(void)irq;
	for (i = 0; i < NUM_SKBS; i++) {
		unsigned length = *(volatile unsigned long *)&nd->dma[i].used_len;
		unsigned next = (rxq_head + 1) % RXQ_LEN;

		if (!length)
			continue;
		if (length < ETH_HLEN || length > ETH_FRAME_LEN) {
			nd->rx_length_errors++;
		} else if (next == rxq_tail) {
			nd->rx_dropped++;
		} else {
			rxq[rxq_head].dev = nd;
			rxq[rxq_head].len = length;
			memcpy(rxq[rxq_head].data, nd->rxbuf[i], length);
			rxq_head = next;
			nd->rx_packets++;
			nd->rx_bytes += length;
		}
		fill_slot(nd, i);
	}
}
/*:*/

/*D:330 Probe and open, which 2.6.23 did separately ("ifconfig eth0 up");
 * our interface comes up at boot.  Our MAC address is 02:00 followed by the
 * Guest id, low byte first, and 00:00: locally administered, and unique
 * among the sixteen Guests a host can run.  Opening means writing it into
 * our slot, so that peers start sending to us, and binding the eight
 * receive buffers at our own slot's key with our IRQ. */
int lguestnet_probe(struct lguest_device *dev)
{
	volatile struct lguest_device_desc *desc = &lguest_devices[dev->index];
	struct net_device *nd;
	unsigned i;

	if (nr_netdevs == MAX_NETDEVS || !desc->num_pages)
		return -1;
	nd = &netdevs[nr_netdevs];
	nd->lgdev = dev;
	nd->features = desc->features;
	nd->mapsize = PAGE_SIZE * desc->num_pages;
	nd->peer_phys = desc->pfn << 12;
	nd->peer = lguest_map(nd->peer_phys, desc->num_pages);
	nd->me = desc->features & (nd->mapsize - 1);
	nd->irq = lgdev_irq(dev);
	if (nd->me >= nd->mapsize / sizeof(struct lguest_net))
		return -1;
	nd->rxbuf = alloc_bootmem(NUM_SKBS * ETH_FRAME_LEN);
	if (!rxq)
		rxq = alloc_bootmem(RXQ_LEN * sizeof(*rxq));
	nd->mac[0] = 0x02;
	nd->mac[1] = 0x00;
	nd->mac[2] = lguest_data.guestid & 0xFF;
	nd->mac[3] = lguest_data.guestid >> 8;
	nd->mac[4] = 0x00;
	nd->mac[5] = 0x00;
	nd->name[0] = 'e', nd->name[1] = 't', nd->name[2] = 'h';
	nd->name[3] = '0' + nr_netdevs;
	dev->name = nd->name;
	dev->private = nd;
	request_irq(nd->irq, lguestnet_rcv, nd);

	for (i = 0; i < ETH_ALEN; i++)
		nd->peer[nd->me].mac[i] = nd->mac[i];
	for (i = 0; i < NUM_SKBS; i++)
		fill_slot(nd, i);
	if (lguest_bind_dma(peer_key(nd, nd->me), nd->dma, NUM_SKBS, nd->irq) != 0) {
		nd->peer[nd->me].mac[0] = 0;
		return -1;
	}
	nr_netdevs++;
	return 0;
}
/*:*/

/*D:340 Transmitting has no switch to do the work, so the sender is the
 * switch.  For every other slot in use (a non-zero first byte), send the
 * frame if it is broadcast or multicast, if that peer is promiscuous, or if
 * the destination is that peer's MAC address (ignoring the promiscuous bit,
 * which lives in the multicast bit's place).  Each copy is one SEND_DMA to
 * that peer's key; the receiver, Host or Launcher, writes back how much it
 * took, and anything short of the whole frame counts as a carrier error. */
static int mac_eq(const u8 *mac, volatile struct lguest_net *peer)
{
	unsigned i;

	if ((peer->mac[0] & ~PROMISC_BIT) != (mac[0] & ~PROMISC_BIT))
		return 0;
	for (i = 1; i < ETH_ALEN; i++)
		if (peer->mac[i] != mac[i])
			return 0;
	return 1;
}

static void transfer_packet(struct net_device *nd, const void *frame, unsigned len,
			    unsigned peernum)
{
	struct lguest_dma dma;

	buf_to_dma(frame, len, &dma);
	nd->tx_bytes += len;
	lguest_send_dma(peer_key(nd, peernum), &dma);
	if (dma.used_len != len)
		nd->tx_carrier_errors++;
	else
		nd->tx_packets++;
}

void net_xmit(struct net_device *nd, const void *frame, unsigned len)
{
	const u8 *dest = frame;
	int broadcast = dest[0] & 1;
	unsigned i, slots = nd->mapsize / sizeof(struct lguest_net);

	for (i = 0; i < slots; i++) {
		if (i == nd->me || nd->peer[i].mac[0] == 0)
			continue;
		if (!broadcast && !(nd->peer[i].mac[0] & PROMISC_BIT) &&
		    !mac_eq(dest, &nd->peer[i]))
			continue;
		transfer_packet(nd, frame, len, i);
	}
}
/*:*/

int net_rx_pending(void)
{
	return rxq_head != rxq_tail;
}

int net_rx_dequeue(struct net_device **nd, void *frame)
{
	unsigned long flags = local_irq_save();
	unsigned len = 0;

	if (rxq_tail != rxq_head) {
		*nd = rxq[rxq_tail].dev;
		len = rxq[rxq_tail].len;
		memcpy(frame, rxq[rxq_tail].data, len);
		rxq_tail = (rxq_tail + 1) % RXQ_LEN;
	}
	local_irq_restore(flags);
	return len;
}

unsigned net_device_count(void)
{
	return nr_netdevs;
}

struct net_device *net_device(unsigned i)
{
	return i < nr_netdevs ? &netdevs[i] : 0;
}

const u8 *netdev_mac(const struct net_device *nd)
{
	return nd->mac;
}

const char *netdev_name(const struct net_device *nd)
{
	return nd->name;
}

int netdev_nocsum(const struct net_device *nd)
{
	return (nd->features & LGUEST_NET_F_NOCSUM) != 0;
}

void net_describe(const struct lguest_device *dev)
{
	const struct net_device *nd = dev->private;
	char mac[18];

	if (!nd)
		return;
	format_mac(mac, nd->mac);
	printk(" %s: mac %s, slot %u, key 0x%x", nd->name, mac, nd->me, peer_key(nd, nd->me));
}

void net_show(void)
{
	unsigned d, i;
	char mac[18];

	for (d = 0; d < nr_netdevs; d++) {
		struct net_device *nd = &netdevs[d];
		unsigned slots = nd->mapsize / sizeof(struct lguest_net), shown = 0;
		u8 m[ETH_ALEN];

		format_mac(mac, nd->mac);
		printk("%s: mac %s slot %u irq %u%s\n", nd->name, mac, nd->me, nd->irq,
		       netdev_nocsum(nd) ? " nocsum" : "");
		printk("  rx %lu packets %lu bytes, %lu bad length, %lu dropped\n",
		       nd->rx_packets, nd->rx_bytes, nd->rx_length_errors, nd->rx_dropped);
		printk("  tx %lu packets %lu bytes, %lu carrier errors\n",
		       nd->tx_packets, nd->tx_bytes, nd->tx_carrier_errors);
		for (i = 0; i < slots; i++) {
			if (i == nd->me || !nd->peer[i].mac[0])
				continue;
			if (shown++ == 8) {
				printk("  ...\n");
				break;
			}
			memcpy(m, (const void *)nd->peer[i].mac, ETH_ALEN);
			format_mac(mac, m);
			printk("  peer slot %u: %s%s\n", i, mac,
			       m[0] & PROMISC_BIT ? " (promiscuous)" : "");
		}
	}
}
