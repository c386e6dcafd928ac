/*M:970 The block benchmark Guest (lguest_bench/devices.py), run by the real
 * Launcher: `python -m launcher --block=FILE MEM blkbench.elf MODE N LAPS`.
 * MODE is "r" or "w"; each lap is N requests of 64 KiB, the largest the
 * block device takes (16 sections of one page, none crossing a page), one
 * outstanding, asleep in HALT until the device's interrupt.  Lap k covers the
 * disk from sector 0 on, so the disk is N x 64 KiB.
 *
 * Reading, it checks every page against what devices.py wrote into the file:
 * page i starts with i ^ RMAGIC and ends with 0xa5a5a5a5.  Writing, it sends
 * pages that start with i ^ WMAGIC and end with ~i, the rest 0x5a, and
 * devices.py reads the file back when the Launcher is gone.  Before the
 * first lap and after each one it prints "mark": the console line's arrival
 * on the Launcher's stdout is the clock. :*/
#include "lguest.h"

#define RMAGIC		0x6c67424bu		/* "lgBK" */
#define WMAGIC		0x6c675752u		/* "lgWR" */
#define NSEC		16
#define T_BLOCK		3
#define MAX_DEVICES	16
#define DEV_VA		0xFF000000UL

struct lguest_device_desc {
	u16 type, features, status, num_pages;
	u32 pfn;
};

struct lguest_block_page {
	int type;
	u32 sector, bytes;
	int result;
	u32 num_sectors;
};

static u8 buf[NSEC * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static unsigned long devptes[1024] __attribute__((aligned(PAGE_SIZE)));
static struct lguest_dma req, reply;
static volatile unsigned blk_irqs;
static volatile struct lguest_block_page *blk;

static void block_irq(struct trapframe *tf)
{
	(void)tf;
	if (blk->result)
		blk_irqs++;
}

static void timer_irq(struct trapframe *tf)
{
	(void)tf;
}

static u32 boot_u32(unsigned off)
{
	return *(volatile u32 *)((char *)boot_params + off);
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

/* The Launcher puts the device descriptors in the page after RAM, and the
 * device pages after that: map them at DEV_VA with one more page table in
 * the page directory the Launcher built (just below the initrd, if any). */
static struct lguest_device_desc *map_devices(unsigned long ram)
{
	unsigned long pgdir = ram - boot_u32(0x21C) - PAGE_SIZE;
	unsigned long *pgd = __va(pgdir);

	for (unsigned i = 0; i < 32; i++)
		devptes[i] = (ram + i * PAGE_SIZE) | 0x063;
	pgd[DEV_VA >> 22] = __pa(devptes) | 0x067;
	hcall(LHCALL_SET_PMD, pgdir, DEV_VA >> 22, 0);
	return (struct lguest_device_desc *)DEV_VA;
}

/* One request of 16 pages at `sector`: for a write the data goes in the DMA
 * we send; for a read it comes into the reply buffer bound at the key, and
 * what we send is only the doorbell. */
static int request(unsigned long key, int write, u32 sector)
{
	struct lguest_dma *d = write ? &req : &reply;

	blk->type = write;
	blk->sector = sector;
	blk->bytes = sizeof(buf);
	blk->result = 0;
	memset(&req, 0, sizeof(req));
	memset(&reply, 0, sizeof(reply));
	for (unsigned i = 0; i < NSEC; i++) {
		d->addr[i] = __pa(buf + i * PAGE_SIZE);
		d->len[i] = PAGE_SIZE;
	}
	blk_irqs = 0;
	hcall(LHCALL_SEND_DMA, key, __pa(&req), 0);
	for (;;) {
		lguest_data.irq_enabled = 0;
		if (blk_irqs)
			break;
		hcall(LHCALL_HALT, 0, 0, 0);
	}
	return blk->result;
}

int main(void)
{
	const char *cmd = boot_cmdline();
	int write;
	unsigned n, laps, reqs = 0, failed = 0, bad = 0;
	unsigned long ram, key;
	struct lguest_device_desc *d;
	int b;

	while (*cmd == ' ')
		cmd++;
	write = *cmd++ == 'w';
	n = number(&cmd);
	laps = number(&cmd);
	lguest_init();
	install_trap(32, timer_irq, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	ram = boot_u32(0x2D0 + 8);			/* e820_map[0].size */
	d = map_devices(ram);
	for (b = 0; b < MAX_DEVICES && d[b].type != T_BLOCK; b++)
		;
	if (b == MAX_DEVICES)
		lguest_crash("bb: no block device");
	blk = (void *)((char *)DEV_VA + (d[b].pfn * PAGE_SIZE - ram));
	key = d[b].pfn * PAGE_SIZE;
	install_trap(32 + b + 1, block_irq, GATE_INTERRUPT, 0);
	if (hcall(LHCALL_BIND_DMA, key, __pa(&reply), (1 << 8) | (b + 1)) != 1)
		lguest_crash("bb: bind failed");
	if (blk->num_sectors != n * NSEC * (PAGE_SIZE / 512))
		lguest_crash("bb: the disk is not N x 64 KiB");
	if (write)
		for (unsigned i = 0; i < sizeof(buf) / 4; i++)
			((u32 *)buf)[i] = 0x5a5a5a5a;
	printk("mark\n");
	for (unsigned lap = 0; lap < laps; lap++) {
		for (unsigned r = 0; r < n; r++) {
			u32 page = r * NSEC;

			if (write)
				for (unsigned i = 0; i < NSEC; i++) {
					u32 *w = (u32 *)(buf + i * PAGE_SIZE);

					w[0] = (page + i) ^ WMAGIC;
					w[PAGE_SIZE / 4 - 1] = ~(page + i);
				}
			if (request(key, write, page * (PAGE_SIZE / 512)) != 1) {
				failed++;
				continue;
			}
			reqs++;
			if (!write)
				for (unsigned i = 0; i < NSEC; i++) {
					u32 *w = (u32 *)(buf + i * PAGE_SIZE);

					bad += w[0] != ((page + i) ^ RMAGIC)
						|| w[PAGE_SIZE / 4 - 1] != 0xa5a5a5a5u;
					w[0] = w[PAGE_SIZE / 4 - 1] = 0;
				}
		}
		printk("mark\n");
	}
	printk("bb: done requests=%u failed=%u bad=%u\n", reqs, failed, bad);
	return 0;
}
