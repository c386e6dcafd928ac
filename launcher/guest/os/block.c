#include "os.h"

/*D:200 The block device (2.6.23's drivers/block/lguest_blk.c): type 3, with
 * one page of its own shared with the Launcher, which holds the request:
 *
 *	type		0 read, 1 write		(Guest)
 *	sector		first 512-byte sector	(Guest)
 *	bytes		length			(Guest)
 *	result		0 pending, 1 done, 2 error	(Launcher)
 *	num_sectors	size of the disk	(Launcher)
 *
 * The physical address of that page is also the device's DMA key.  One
 * request is in flight at a time; 2.6.23 stopped the request queue until the
 * interrupt came, we simply wait for it. */
struct lguest_block_page {
	s32 type;
	u32 sector;
	u32 bytes;
	s32 result;
	u32 num_sectors;
};

struct blockdev {
	struct lguest_device *lgdev;
	unsigned long phys_addr;		/* the page, and the key */
	volatile struct lguest_block_page *lb_page;
	unsigned irq;
	struct lguest_dma dma;			/* the one bound reply buffer */
	volatile int busy;
	volatile int result;
	char name[8];
};

#define MAX_BLOCKDEVS 4
static struct blockdev blockdevs[MAX_BLOCKDEVS];
static unsigned nr_blockdevs;
/*:*/

/*D:210 The interrupt means "the Launcher has finished", but only if result
 * is no longer 0: a spurious interrupt must not complete anything.  Done,
 * we give the reply buffer back by zeroing its used_len. */
static void lgb_irq(unsigned irq, void *_bd)
{
	struct blockdev *bd = _bd;

	(void)irq;
	if (!bd->busy || !bd->lb_page->result)
		return;
	bd->result = bd->lb_page->result;
	bd->busy = 0;
	bd->dma.used_len = 0;
}
/*:*/

/*D:220 Probing maps the device's page, claims the IRQ and binds the reply
 * buffer at the key, once: one lguest_dma, whose sections each read will
 * point at that read's destination.  It starts out empty (len[0] = 0). */
int lguestblk_probe(struct lguest_device *dev)
{
	struct blockdev *bd;

	if (nr_blockdevs == MAX_BLOCKDEVS)
		return -1;
	bd = &blockdevs[nr_blockdevs];
	bd->lgdev = dev;
	bd->phys_addr = lguest_devices[dev->index].pfn << 12;
	bd->lb_page = lguest_map(bd->phys_addr, 1);
	bd->irq = lgdev_irq(dev);
	request_irq(bd->irq, lgb_irq, bd);
	bd->dma.used_len = 0;
	bd->dma.len[0] = 0;
	if (lguest_bind_dma(bd->phys_addr, &bd->dma, 1, bd->irq) != 0)
		return -1;
	bd->name[0] = 'l', bd->name[1] = 'g', bd->name[2] = 'b';
	bd->name[3] = 'a' + nr_blockdevs;
	dev->name = bd->name;
	dev->private = bd;
	nr_blockdevs++;
	return 0;
}
/*:*/

/*D:230 One request.  Both directions start the same way: type, sector,
 * result = 0 and the byte count in the shared page.  Then:
 *  - a write sends the data itself: SEND_DMA(key, a DMA of the buffer);
 *  - a read points the *bound* buffer at the destination and sends an
 *    empty DMA (len[0] = 0) as a doorbell; the Launcher asks the Host for
 *    the bound buffer (GETDMA) and reads the disk straight into it.
 * Either way the Launcher answers with result and an interrupt, before the
 * Host even runs us again, so the wait below is normally over at once.
 * The Launcher exits if asked for a sector past the end of its file, so we
 * check the range ourselves first. */
int blk_rw(struct blockdev *bd, int write, u32 sector, void *buf, unsigned bytes)
{
	struct lguest_dma send, ping;
	unsigned long flags;
	u32 n = bytes / SECTOR_SIZE;

	if (!bytes || bytes % SECTOR_SIZE || bytes > 8 * PAGE_SIZE)
		return -1;
	if (sector >= bd->lb_page->num_sectors || n > bd->lb_page->num_sectors - sector)
		return -2;
	flags = local_irq_save();
	bd->busy = 1;
	bd->lb_page->type = write;
	bd->lb_page->sector = sector;
	bd->lb_page->result = 0;
	if (write) {
		bd->lb_page->bytes = buf_to_dma(buf, bytes, &send);
		lguest_send_dma(bd->phys_addr, &send);
	} else {
		bd->lb_page->bytes = buf_to_dma(buf, bytes, &bd->dma);
		ping.len[0] = 0;
		lguest_send_dma(bd->phys_addr, &ping);
	}
	while (bd->busy && !interrupted()) {
		local_irq_disable();
		if (bd->busy)
			idle(IDLE_FOREVER);
		else
			local_irq_enable();
	}
	local_irq_disable();
	if (bd->busy) {		/* ^C: give up on it */
		bd->busy = 0;
		bd->result = 2;
	}
	local_irq_restore(flags);
	return bd->result == 1 ? 0 : -3;
}
/*:*/

struct blockdev *blk_find(const char *name)
{
	unsigned i;

	for (i = 0; i < nr_blockdevs; i++)
		if (!name || !strcmp(name, blockdevs[i].name))
			return &blockdevs[i];
	return 0;
}

const char *blk_name(const struct blockdev *bd)
{
	return bd->name;
}

u32 blk_sectors(const struct blockdev *bd)
{
	return bd->lb_page->num_sectors;
}

void blk_describe(const struct lguest_device *dev)
{
	const struct blockdev *bd = dev->private;
	u32 s;

	if (!bd)
		return;
	s = blk_sectors(bd);
	printk(" %s: %u sectors (%u KB), key 0x%lx", bd->name, s, s / 2, bd->phys_addr);
}
