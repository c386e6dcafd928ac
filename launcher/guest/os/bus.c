/*D:100 The lguest bus.  In 2.6.23 lguest had no virtual PCI: the Launcher
 * describes its devices in one page of memory, directly above the Guest's
 * RAM, an array of sixteen 12-byte descriptors (type, features, status,
 * number of pages, first page).  The Guest finds it at max_pfn << 12, which
 * is why the e820 map must end exactly there.
 *
 * A device is identified by its place in that array: device i raises IRQ
 * i + 1 (IRQ 0 is the timer).  Its "pages", if it has any, are more memory
 * above RAM that the Guest and the Launcher share; the block device keeps
 * its request in one, the network device a table of MAC addresses. :*/
#include "os.h"

volatile struct lguest_device_desc *lguest_devices;
unsigned long lguest_devices_phys;
struct lguest_device lguest_devs[LGUEST_MAX_DEVICES];

/*D:110 Every transfer between the Guest and the outside world is DMA in
 * lguest's sense: a struct lguest_dma lists up to sixteen sections of
 * Guest-physical memory.  Three calls are all the drivers use, and they are
 * 2.6.23's, word for word:
 *  - lguest_bind_dma() offers an array of receive buffers at a key, with the
 *    IRQ to raise when something lands in one (the Host answers 1 or 0);
 *  - lguest_unbind_dma() takes them back (IRQ 0 means unbind);
 *  - lguest_send_dma() sends one buffer list to a key, always with used_len
 *    zeroed first: whoever receives it writes back how much was taken. */
int lguest_bind_dma(unsigned long key, struct lguest_dma *dmas, unsigned num, u8 irq)
{
	if (!hcall(LHCALL_BIND_DMA, key, __pa(dmas), (num << 8) | irq))
		return -1;
	return 0;
}

void lguest_unbind_dma(unsigned long key, struct lguest_dma *dmas)
{
	hcall(LHCALL_BIND_DMA, key, __pa(dmas), 0);
}

void lguest_send_dma(unsigned long key, struct lguest_dma *dma)
{
	dma->used_len = 0;
	hcall(LHCALL_SEND_DMA, key, __pa(dma), 0);
}

/* A buffer as DMA sections, split wherever it crosses a page boundary: the
 * Host refuses sections that cross one on the Guest-to-Guest path, and the
 * 2.6.23 net driver (skb_to_dma) split its buffers the same way. */
unsigned buf_to_dma(const void *buf, unsigned len, struct lguest_dma *dma)
{
	unsigned long p = __pa(buf);
	unsigned seg = 0, done = 0;

	while (done < len && seg < LGUEST_MAX_DMA_SECTIONS) {
		unsigned n = PAGE_SIZE - ((p + done) & (PAGE_SIZE - 1));

		if (n > len - done)
			n = len - done;
		dma->addr[seg] = p + done;
		dma->len[seg++] = n;
		done += n;
	}
	if (seg < LGUEST_MAX_DMA_SECTIONS)
		dma->len[seg] = 0;
	return done;
}
/*:*/

const char *lguest_device_type_name(unsigned type)
{
	switch (type) {
	case LGUEST_DEVICE_T_CONSOLE:
		return "console";
	case LGUEST_DEVICE_T_NET:
		return "net";
	case LGUEST_DEVICE_T_BLOCK:
		return "block";
	}
	return "unknown";
}

/*D:120 lguest_bus_init() is 2.6.23's postcore initcall: map the device page
 * and acknowledge each device in it.  The status word is the Guest's half of
 * the conversation; the Launcher can read it to see how far the Guest got
 * with each device: ACKNOWLEDGE ("I saw it"), then DRIVER ("a driver is
 * looking at it") and DRIVER_OK ("and it works"), or FAILED.  An empty
 * entry (type 0) is skipped, but the scan goes on to the end. */
unsigned lguest_bus_init(void)
{
	unsigned i, n = 0;

	lguest_devices_phys = mem_size;
	lguest_devices = lguest_map(lguest_devices_phys, 1);
	for (i = 0; i < LGUEST_MAX_DEVICES; i++) {
		lguest_devs[i].index = i;
		if (!lguest_devices[i].type)
			continue;
		lguest_devices[i].status |= LGUEST_DEVICE_S_ACKNOWLEDGE;
		n++;
	}
	return n;
}
/*:*/

/*D:130 Matching drivers to devices is a switch on the type.  The driver's
 * probe gets the device; DRIVER is set before it runs and DRIVER_OK if it
 * returns 0, exactly as lguest_dev_probe() did.  A device nobody drives
 * (an unknown type) keeps only ACKNOWLEDGE. */
void lguest_bus_probe(void)
{
	unsigned i;

	for (i = 0; i < LGUEST_MAX_DEVICES; i++) {
		struct lguest_device *dev = &lguest_devs[i];
		int (*probe)(struct lguest_device *) = 0;

		switch (lguest_devices[i].type) {
		case LGUEST_DEVICE_T_CONSOLE:
			probe = lguestcons_probe;
			break;
		case LGUEST_DEVICE_T_BLOCK:
			probe = lguestblk_probe;
			break;
		case LGUEST_DEVICE_T_NET:
			probe = lguestnet_probe;
			break;
		}
		if (!probe)
			continue;
		lguest_devices[i].status |= LGUEST_DEVICE_S_DRIVER;
		if (probe(dev) == 0)
			lguest_devices[i].status |= LGUEST_DEVICE_S_DRIVER_OK;
		else
			printk("lguest: device %u (%s) failed to probe\n",
			       i, lguest_device_type_name(lguest_devices[i].type));
	}
}
/*:*/
