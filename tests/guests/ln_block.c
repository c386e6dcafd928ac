/* The Launcher's block test Guest (tests/test_launcher_run.py): writes a
 * pattern to sectors 0..10 of its disk (O_DIRECT-friendly aligned buffers,
 * two sections, and one unaligned buffer), reads it back and compares, then
 * makes requests the Launcher must refuse with result 2 without touching the
 * file, and powers off. */
#include "ln_lib.h"

static u8 wbuf[4 * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static u8 rbuf[4 * PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

static u8 pattern(u32 sector, u32 i)
{
	return (u8)((sector * 7 + i * 13) ^ 0x5A);
}

static void fill(u8 *p, u32 sector, u32 n)
{
	for (u32 i = 0; i < n; i++)
		p[i] = pattern(sector + i / 512, i % 512);
}

static int check(const u8 *p, u32 sector, u32 n)
{
	for (u32 i = 0; i < n; i++)
		if (p[i] != pattern(sector + i / 512, i % 512))
			return 0;
	return 1;
}

int main(void)
{
	struct lguest_device_desc *d;
	int b, r1, r2, r3, r4, r5, r6, r7;
	unsigned long a[2];
	u16 l[2];

	lguest_init();
	ln_setup_irqs();
	d = map_devices();
	b = ln_blk_setup(d);
	if (b < 0)
		lguest_crash("ln: no block device");
	printk("ln: block dev %d features %x sectors %u\n", b, d[b].features,
	       (unsigned)ln_blk->num_sectors);

	/* Sectors 0..7: one aligned page. */
	fill(wbuf, 0, 4096);
	a[0] = __pa(wbuf); l[0] = 4096;
	r1 = ln_blk_request(1, 0, 4096, 1, a, l);
	/* Sectors 8 and 9: two sections. */
	fill(wbuf + 4096, 8, 512);
	fill(wbuf + 8192, 9, 512);
	a[0] = __pa(wbuf + 4096); l[0] = 512;
	a[1] = __pa(wbuf + 8192); l[1] = 512;
	r2 = ln_blk_request(1, 8, 1024, 2, a, l);
	/* Sector 10 from an unaligned buffer. */
	fill(wbuf + 12288 + 4, 10, 512);
	a[0] = __pa(wbuf + 12288 + 4); l[0] = 512;
	r3 = ln_blk_request(1, 10, 512, 1, a, l);
	printk("ln: writes %d %d %d\n", r1, r2, r3);

	/* Read 0..9 back (aligned, two sections) and 10 (unaligned). */
	memset(rbuf, 0, sizeof(rbuf));
	a[0] = __pa(rbuf); l[0] = 4096;
	a[1] = __pa(rbuf + 4096); l[1] = 1024;
	r1 = ln_blk_request(0, 0, 5120, 2, a, l);
	a[0] = __pa(rbuf + 8192 + 4); l[0] = 512;
	r2 = ln_blk_request(0, 10, 512, 1, a, l);
	printk("ln: reads %d %d used %u match %d %d\n", r1, r2, (unsigned)ln_blk_reply.used_len,
	       check(rbuf, 0, 5120), check(rbuf + 8192 + 4, 10, 512));

	/* What must be refused. */
	fill(wbuf, 0, 4096);
	a[0] = __pa(wbuf); l[0] = 1024;
	r1 = ln_blk_request(1, ln_blk->num_sectors - 1, 1024, 1, a, l);	/* past the end */
	l[0] = 512;
	r2 = ln_blk_request(0, ln_blk->num_sectors, 512, 1, a, l);	/* read at the end */
	l[0] = 1024;
	r3 = ln_blk_request(1, 20, 2048, 1, a, l);			/* bytes != sections */
	a[0] = 0xFFFFF000; l[0] = 512;
	r4 = ln_blk_request(1, 20, 512, 1, a, l);			/* outside the Guest */
	r5 = ln_blk_request(0, 20, 512, 1, a, l);			/* read into outside */
	a[0] = __pa(wbuf); l[0] = 512;
	r6 = ln_blk_request(1, 0x7FFFFF, 512, 1, a, l);		/* far past the end */
	hcall(LHCALL_BIND_DMA, ln_blk_key, __pa(&ln_blk_reply), 0);	/* unbind */
	r7 = ln_blk_request(0, 0, 512, 1, a, l);			/* no reply buffer */
	printk("ln: refused %d %d %d %d %d %d %d\n", r1, r2, r3, r4, r5, r6, r7);
	printk("ln: block done\n");
	return 0;
}
