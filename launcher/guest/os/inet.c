#include "os.h"

/*G:400 A network driver wants something to carry, so the OS has the
 * smallest IPv4 stack that can be pinged and can ping: Ethernet, ARP with a
 * little cache, IPv4 without fragments or routing (every address is taken
 * to be on the local link), and ICMP echo.  It runs entirely in the shell's
 * context: the driver's interrupt handler only queues frames, and net_poll()
 * handles them whenever the shell or ping is about to sleep.
 *
 * Our address comes from the kernel command line, "ip=10.0.0.2" (Linux's
 * ip=<client>:<server>:<gw>:<mask>:... form works too: the first field is
 * used), or else it is 10.0.0.(guest id + 2), which leaves 10.0.0.1 for the
 * host's end of a --tunnet link. */
#define ETH_P_IP	0x0800
#define ETH_P_ARP	0x0806
#define IPPROTO_ICMP	1
#define ICMP_ECHOREPLY	0
#define ICMP_ECHO	8

struct ethhdr {
	u8 h_dest[ETH_ALEN], h_source[ETH_ALEN];
	u16 h_proto;
} __attribute__((packed));

struct arphdr {
	u16 ar_hrd, ar_pro;
	u8 ar_hln, ar_pln;
	u16 ar_op;
	u8 ar_sha[ETH_ALEN], ar_sip[4], ar_tha[ETH_ALEN], ar_tip[4];
} __attribute__((packed));

struct iphdr {
	u8 ihl_version, tos;
	u16 tot_len, id, frag_off;
	u8 ttl, protocol;
	u16 check;
	u32 saddr, daddr;
} __attribute__((packed));

struct icmphdr {
	u8 type, code;
	u16 checksum, id, sequence;
} __attribute__((packed));

_Static_assert(sizeof(struct arphdr) == 28, "arphdr");
_Static_assert(sizeof(struct iphdr) == 20, "iphdr");

u32 my_ip;
static u16 ip_id;
static u8 *txbuf, *rxframe;		/* a page each: one DMA section */
static const u8 broadcast_mac[ETH_ALEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
/*:*/

int parse_ip(const char *s, u32 *ip)
{
	u32 v = 0;
	unsigned part;

	for (part = 0; part < 4; part++) {
		unsigned n = 0, digits = 0;

		while (*s >= '0' && *s <= '9' && digits < 4)
			n = n * 10 + (*s++ - '0'), digits++;
		if (!digits || n > 255)
			return 0;
		v = v << 8 | n;
		if (part < 3 && *s++ != '.')
			return 0;
	}
	if (*s && *s != ':' && *s != ' ')
		return 0;
	*ip = v;
	return 1;
}

void format_ip(char *buf, u32 ip)
{
	static const char digits[] = "0123456789";
	int shift;

	for (shift = 24; shift >= 0; shift -= 8) {
		unsigned n = (ip >> shift) & 0xFF;

		if (n >= 100)
			*buf++ = digits[n / 100];
		if (n >= 10)
			*buf++ = digits[n / 10 % 10];
		*buf++ = digits[n % 10];
		*buf++ = shift ? '.' : 0;
	}
}

/*G:410 The ARP cache: eight entries, each either resolved (we know the MAC
 * address and which interface it is on) or incomplete (we have asked, and
 * keep the last three packets that are waiting for the answer, as Linux's
 * neighbour code did).  An unanswered request is repeated once a second,
 * three times in all, and then the entry and its packets are dropped. */
#define ARP_ENTRIES	8
#define ARP_TRIES	3
#define ARP_QUEUE_LEN	3		/* Linux's unres_qlen */
enum { ARP_FREE, ARP_INCOMPLETE, ARP_REACHABLE };

static struct arp_entry {
	int state;
	u32 ip;
	u8 mac[ETH_ALEN];
	struct net_device *dev;
	unsigned long stamp;		/* ms: last update, or last request */
	unsigned tries;
	unsigned queued;		/* IP packets waiting, without Ethernet headers: */
	unsigned qlen[ARP_QUEUE_LEN];
	u8 *queue;			/* ARP_QUEUE_LEN x ETH_DATA_LEN bytes */
} arp_table[ARP_ENTRIES];

static struct arp_entry *arp_lookup(u32 ip)
{
	unsigned i;

	for (i = 0; i < ARP_ENTRIES; i++)
		if (arp_table[i].state != ARP_FREE && arp_table[i].ip == ip)
			return &arp_table[i];
	return 0;
}

static struct arp_entry *arp_alloc(u32 ip)
{
	struct arp_entry *e = 0;
	unsigned i;

	for (i = 0; i < ARP_ENTRIES; i++) {
		struct arp_entry *c = &arp_table[i];

		if (c->state == ARP_FREE) {
			e = c;
			break;
		}
		if (c->state == ARP_REACHABLE && (!e || c->stamp < e->stamp))
			e = c;		/* else evict the oldest resolved one */
	}
	if (!e)
		e = &arp_table[0];
	e->state = ARP_FREE;
	e->dev = 0;
	e->tries = e->queued = 0;
	e->ip = ip;
	return e;
}

static void eth_send(struct net_device *nd, const u8 *dest, u16 proto, unsigned len)
{
	struct ethhdr *eh = (struct ethhdr *)txbuf;

	memcpy(eh->h_dest, dest, ETH_ALEN);
	memcpy(eh->h_source, netdev_mac(nd), ETH_ALEN);
	eh->h_proto = htons(proto);
	net_xmit(nd, txbuf, ETH_HLEN + len);
}

static void arp_send(struct net_device *nd, u16 op, const u8 *tha, u32 tip)
{
	struct arphdr *ah = (struct arphdr *)(txbuf + ETH_HLEN);
	u32 sip = htonl(my_ip);

	tip = htonl(tip);
	ah->ar_hrd = htons(1);
	ah->ar_pro = htons(ETH_P_IP);
	ah->ar_hln = ETH_ALEN;
	ah->ar_pln = 4;
	ah->ar_op = htons(op);
	memcpy(ah->ar_sha, netdev_mac(nd), ETH_ALEN);
	memcpy(ah->ar_sip, &sip, 4);
	memcpy(ah->ar_tha, op == 1 ? (const u8 *)"\0\0\0\0\0" : tha, ETH_ALEN);
	memcpy(ah->ar_tip, &tip, 4);
	eth_send(nd, op == 1 ? broadcast_mac : tha, ETH_P_ARP, sizeof(*ah));
}

static void arp_solicit(struct arp_entry *e)
{
	unsigned i;

	e->tries++;
	e->stamp = clock_ms();
	for (i = 0; i < net_device_count(); i++)
		arp_send(net_device(i), 1, broadcast_mac, e->ip);
}

/* Send the packet that waited for this entry to resolve. */
static void arp_flush_queue(struct arp_entry *e)
{
	unsigned i, n = e->queued;

	e->queued = 0;
	for (i = 0; i < n; i++) {
		memcpy(txbuf + ETH_HLEN, e->queue + i * ETH_DATA_LEN, e->qlen[i]);
		eth_send(e->dev, e->mac, ETH_P_IP, e->qlen[i]);
	}
}

/* A packet waits for its next hop's address; when three already wait, the
 * oldest is dropped, as Linux's neighbour code did. */
static void arp_enqueue(struct arp_entry *e, const void *packet, unsigned len)
{
	if (e->queued == ARP_QUEUE_LEN) {
		memcpy(e->queue, e->queue + ETH_DATA_LEN, (ARP_QUEUE_LEN - 1) * ETH_DATA_LEN);
		memcpy(e->qlen, e->qlen + 1, (ARP_QUEUE_LEN - 1) * sizeof(e->qlen[0]));
		e->queued--;
	}
	memcpy(e->queue + e->queued * ETH_DATA_LEN, packet, len);
	e->qlen[e->queued++] = len;
}

/* How long until arp_timer() has work: the idle loop sleeps no longer. */
unsigned long net_timer_ms(void)
{
	unsigned long now = clock_ms(), best = IDLE_FOREVER;
	unsigned i;

	for (i = 0; i < ARP_ENTRIES; i++) {
		unsigned long age = now - arp_table[i].stamp;

		if (arp_table[i].state != ARP_INCOMPLETE)
			continue;
		if (age >= 1000)
			return 0;
		if (1000 - age < best)
			best = 1000 - age;
	}
	return best;
}

/* Called whenever we are about to sleep: retry or give up on requests. */
static void arp_timer(void)
{
	unsigned long now = clock_ms();
	unsigned i;

	for (i = 0; i < ARP_ENTRIES; i++) {
		struct arp_entry *e = &arp_table[i];

		if (e->state != ARP_INCOMPLETE || now - e->stamp < 1000)
			continue;
		if (e->tries >= ARP_TRIES)
			e->state = ARP_FREE;
		else
			arp_solicit(e);
	}
}
/*:*/

void inet_init(void)
{
	const char *v = cmdline_option("ip");

	u8 *q;
	unsigned i;

	if (!v || !parse_ip(v, &my_ip))
		my_ip = (10U << 24) | (lguest_data.guestid + 2);
	if (!net_device_count())
		return;
	txbuf = alloc_bootmem(PAGE_SIZE);
	rxframe = alloc_bootmem(PAGE_SIZE);
	q = alloc_bootmem(ARP_ENTRIES * ARP_QUEUE_LEN * ETH_DATA_LEN);
	for (i = 0; i < ARP_ENTRIES; i++)
		arp_table[i].queue = q + i * ARP_QUEUE_LEN * ETH_DATA_LEN;
}

/*G:420 An ARP packet is either a question ("who has 10.0.0.2?") or an
 * answer.  As RFC 826 says, a packet aimed at our address teaches us the
 * sender's MAC address whichever it is, and one about a sender we already
 * know updates what we know; then a question about us gets an answer, sent
 * straight back to whoever asked. */
static void arp_rcv(struct net_device *nd, const u8 *frame, unsigned len)
{
	const struct arphdr *ah = (const struct arphdr *)(frame + ETH_HLEN);
	u8 sha[ETH_ALEN];
	u32 sip, tip;
	struct arp_entry *e;

	if (len < ETH_HLEN + sizeof(*ah) || ntohs(ah->ar_hrd) != 1 ||
	    ntohs(ah->ar_pro) != ETH_P_IP || ah->ar_hln != ETH_ALEN || ah->ar_pln != 4)
		return;
	memcpy(&sip, ah->ar_sip, 4);
	memcpy(&tip, ah->ar_tip, 4);
	memcpy(sha, ah->ar_sha, ETH_ALEN);
	sip = ntohl(sip);
	tip = ntohl(tip);
	if (!sip || sha[0] & 1)
		return;
	e = arp_lookup(sip);
	if (!e && tip != my_ip)
		return;
	if (!e)
		e = arp_alloc(sip);
	memcpy(e->mac, sha, ETH_ALEN);
	e->dev = nd;
	e->state = ARP_REACHABLE;
	e->stamp = clock_ms();
	arp_flush_queue(e);
	if (tip == my_ip && ntohs(ah->ar_op) == 1)
		arp_send(nd, 2, sha, sip);
}
/*:*/

/*G:430 Sending an IP packet: fill in the header, with its checksum (the
 * 2.6.23 TAP path offloads nothing, so every checksum is ours to compute),
 * then find the next hop's MAC address in the ARP cache.  If it is not there
 * yet, the packet waits in the cache entry while we ask. */
static void ip_send(u32 daddr, u8 protocol, unsigned payload_len)
{
	struct iphdr *ih = (struct iphdr *)(txbuf + ETH_HLEN);
	unsigned len = sizeof(*ih) + payload_len;
	struct arp_entry *e;

	if (!net_device_count())
		return;
	ih->ihl_version = 0x45;
	ih->tos = 0;
	ih->tot_len = htons(len);
	ih->id = htons(ip_id++);
	ih->frag_off = htons(0x4000);		/* don't fragment */
	ih->ttl = 64;
	ih->protocol = protocol;
	ih->check = 0;
	ih->saddr = htonl(my_ip);
	ih->daddr = htonl(daddr);
	ih->check = htons(ip_checksum(ih, sizeof(*ih), 0));

	e = arp_lookup(daddr);
	if (e && e->state == ARP_REACHABLE) {
		eth_send(e->dev, e->mac, ETH_P_IP, len);
		return;
	}
	if (!e) {
		e = arp_alloc(daddr);
		e->state = ARP_INCOMPLETE;
	}
	arp_enqueue(e, ih, len);
	if (!e->tries)
		arp_solicit(e);
}
/*:*/

/* ping's state: what it sent and what came back. */
static struct {
	int active;
	u32 ip;
	u16 id;
	unsigned received;
	u64 rtt_sum;
	u32 rtt_min, rtt_max;		/* microseconds */
} ping_state;

static void print_ms(u32 us)
{
	printk("%u.%03u", us / 1000, us % 1000);
}

/*G:440 ICMP, the only protocol above IP we speak.  An echo request to our
 * address gets an echo reply with the same identifier, sequence number and
 * data: the request turned round in place.  An echo reply is checked against
 * the ping in progress; the time it was sent travels in its data.  Unless the
 * device's NOCSUM feature says the Host's side already verified them, ICMP
 * checksums are checked too, as Linux's icmp_rcv() did. */
static void icmp_rcv(struct net_device *nd, const struct iphdr *ih, u8 *data, unsigned len)
{
	struct icmphdr *icmp = (struct icmphdr *)data;
	u32 saddr = ntohl(ih->saddr);

	if (len < sizeof(*icmp))
		return;
	if (!netdev_nocsum(nd) && ip_checksum(data, len, 0) != 0)
		return;
	if (icmp->type == ICMP_ECHO && ntohl(ih->daddr) == my_ip) {
		icmp->type = ICMP_ECHOREPLY;
		icmp->checksum = 0;
		icmp->checksum = htons(ip_checksum(data, len, 0));
		memcpy(txbuf + ETH_HLEN + sizeof(struct iphdr), data, len);
		ip_send(saddr, IPPROTO_ICMP, len);
	} else if (icmp->type == ICMP_ECHOREPLY && ping_state.active &&
		   saddr == ping_state.ip && ntohs(icmp->id) == ping_state.id &&
		   len >= sizeof(*icmp) + 8) {
		u64 sent, rtt;
		char ipbuf[16];
		u32 us;

		memcpy(&sent, data + sizeof(*icmp), 8);
		rtt = clock_ns() - sent;
		do_div(&rtt, 1000);
		us = (u32)rtt;
		ping_state.received++;
		ping_state.rtt_sum += us;
		if (ping_state.received == 1 || us < ping_state.rtt_min)
			ping_state.rtt_min = us;
		if (us > ping_state.rtt_max)
			ping_state.rtt_max = us;
		format_ip(ipbuf, saddr);
		printk("%u bytes from %s: icmp_seq=%u ttl=%u time=", len, ipbuf,
		       ntohs(icmp->sequence), ih->ttl);
		print_ms(us);
		printk(" ms\n");
	}
}
/*:*/

/*G:450 Receiving an IP packet: only well-formed IPv4 for our address (or
 * the all-ones broadcast) with a correct header checksum, and no fragments:
 * nothing here sends packets big enough to need them. */
static void ip_rcv(struct net_device *nd, u8 *frame, unsigned len)
{
	struct iphdr *ih = (struct iphdr *)(frame + ETH_HLEN);
	unsigned ihl, tot;
	u32 daddr;

	if (len < ETH_HLEN + sizeof(*ih) || (ih->ihl_version >> 4) != 4)
		return;
	ihl = (ih->ihl_version & 15) * 4;
	tot = ntohs(ih->tot_len);
	if (ihl < sizeof(*ih) || tot < ihl || tot > len - ETH_HLEN)
		return;
	if (ip_checksum(ih, ihl, 0) != 0)
		return;
	daddr = ntohl(ih->daddr);
	if (daddr != my_ip && daddr != 0xFFFFFFFF)
		return;
	if (ntohs(ih->frag_off) & 0x3FFF)
		return;
	if (ih->protocol == IPPROTO_ICMP)
		icmp_rcv(nd, ih, (u8 *)ih + ihl, tot - ihl);
}

void net_poll(void)
{
	struct net_device *nd;
	unsigned len;

	while ((len = net_rx_dequeue(&nd, rxframe)) != 0) {
		const struct ethhdr *eh = (const struct ethhdr *)rxframe;

		if (memcmp(eh->h_dest, netdev_mac(nd), ETH_ALEN) &&
		    memcmp(eh->h_dest, broadcast_mac, ETH_ALEN))
			continue;	/* not for us (a promiscuous peer's traffic) */
		switch (ntohs(eh->h_proto)) {
		case ETH_P_ARP:
			arp_rcv(nd, rxframe, len);
			break;
		case ETH_P_IP:
			ip_rcv(nd, rxframe, len);
			break;
		}
	}
	arp_timer();
}
/*:*/

/*G:460 ping: echo requests with 56 bytes of data (the first 8 the time of
 * sending, in nanoseconds since boot), one every interval, and then a second
 * for the last reply.  Waiting is HALT with the timer set for the next thing
 * due, woken early by a frame or a key; ^C stops early, as it does for the
 * real ping. */
static void ping_send(u16 seq)
{
	u8 *data = txbuf + ETH_HLEN + sizeof(struct iphdr);
	struct icmphdr *icmp = (struct icmphdr *)data;
	u64 now = clock_ns();
	unsigned i;

	icmp->type = ICMP_ECHO;
	icmp->code = 0;
	icmp->checksum = 0;
	icmp->id = htons(ping_state.id);
	icmp->sequence = htons(seq);
	memcpy(data + sizeof(*icmp), &now, 8);
	for (i = 8; i < 56; i++)
		data[sizeof(*icmp) + i] = i;
	icmp->checksum = htons(ip_checksum(data, sizeof(*icmp) + 56, 0));
	ip_send(ping_state.ip, IPPROTO_ICMP, sizeof(*icmp) + 56);
}

int ping(u32 ip, unsigned count, unsigned interval_ms)
{
	unsigned sent = 0;
	unsigned long next = clock_ms(), last = 0;
	char ipbuf[16];

	format_ip(ipbuf, ip);
	if (!net_device_count()) {
		printk("ping: no network device\n");
		return -1;
	}
	printk("PING %s: 56 data bytes\n", ipbuf);
	memset(&ping_state, 0, sizeof(ping_state));
	ping_state.ip = ip;
	ping_state.id = 0x4c00 | lguest_data.guestid;
	ping_state.active = 1;
	for (;;) {
		unsigned long now = clock_ms(), wait;

		if (sent < count && now - next < 0x80000000UL) {
			ping_send(++sent);
			last = now;
			next += interval_ms;
		}
		net_poll();
		if (interrupted())
			break;
		now = clock_ms();
		if (sent == count && (ping_state.received == count || now - last >= 1000))
			break;
		if (sent < count)
			wait = next - now < 0x80000000UL ? next - now : 0;
		else
			wait = last + 1000 - now;
		if (net_timer_ms() < wait)
			wait = net_timer_ms();
		local_irq_disable();
		if (!net_rx_pending() && !ctrl_c_pending())
			idle(wait);
		else
			local_irq_enable();
	}
	ping_state.active = 0;
	printk("--- %s ping statistics ---\n", ipbuf);
	printk("%u packets transmitted, %u received, %u%% packet loss\n", sent,
	       ping_state.received,
	       sent ? (sent - ping_state.received) * 100 / sent : 0);
	if (ping_state.received) {
		u64 avg = ping_state.rtt_sum;

		do_div(&avg, ping_state.received);
		printk("rtt min/avg/max = ");
		print_ms(ping_state.rtt_min);
		printk("/");
		print_ms((u32)avg);
		printk("/");
		print_ms(ping_state.rtt_max);
		printk(" ms\n");
	}
	return ping_state.received ? 0 : -1;
}
/*:*/

void inet_show(void)
{
	char buf[18];
	unsigned i;

	format_ip(buf, my_ip);
	printk("ip %s\n", buf);
	for (i = 0; i < ARP_ENTRIES; i++) {
		struct arp_entry *e = &arp_table[i];
		char mac[18];

		if (e->state == ARP_FREE)
			continue;
		format_ip(buf, e->ip);
		if (e->state == ARP_REACHABLE) {
			format_mac(mac, e->mac);
			printk("arp %s at %s on %s\n", buf, mac, netdev_name(e->dev));
		} else {
			printk("arp %s incomplete\n", buf);
		}
	}
}
