/* A block Guest driven from the console, for tests/test_block_faults.py.
 * Each input line is one request on the first disk, answered with one line:
 *   w SECTOR COUNT BYTE   write COUNT (1..8) sectors filled with BYTE (hex)
 *                         -> "blk: w SECTOR COUNT -> RESULT"
 *   r SECTOR COUNT        read them -> "blk: r SECTOR COUNT -> RESULT used N
 *                         bytes B0 BLAST" (the first and last byte read, in hex;
 *                         the buffer is filled with 0xCC before each read)
 *   quit                  power off
 * RESULT is what the Launcher left in the block page: 1 done, 2 error.  The
 * data always sits in one page-aligned section, so O_DIRECT can be used. */
#include "ln_lib.h"

static u8 buf[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

/* The data always sits in one page-aligned section. */
static int request(int write, u32 sector, u32 bytes)
{
	unsigned long addr = __pa(buf);
	u16 len = bytes;

	return ln_blk_request(write, sector, bytes, 1, &addr, &len);
}

/* Numbers: decimal, or hexadecimal for the fill byte. */
static const char *number(const char *p, unsigned base, u32 *out)
{
	u32 v = 0;

	while (*p == ' ')
		p++;
	for (;; p++) {
		unsigned d;

		if (*p >= '0' && *p <= '9')
			d = *p - '0';
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = *p - 'a' + 10;
		else
			break;
		v = v * base + d;
	}
	*out = v;
	return p;
}

static void command(const char *cmd)
{
	u32 sector, count, byte;
	const char *p;
	int r;

	if (!strcmp(cmd, "quit")) {
		printk("blk: bye\n");
		lguest_crash("Power down");
	}
	if ((cmd[0] != 'r' && cmd[0] != 'w') || cmd[1] != ' ') {
		printk("blk: what? [%s]\n", cmd);
		return;
	}
	p = number(cmd + 2, 10, &sector);
	p = number(p, 10, &count);
	if (count < 1 || count > PAGE_SIZE / 512) {
		printk("blk: bad count\n");
		return;
	}
	if (cmd[0] == 'w') {
		number(p, 16, &byte);
		memset(buf, (int)byte, count * 512);
		r = request(1, sector, count * 512);
		printk("blk: w %u %u -> %d\n", sector, count, r);
	} else {
		memset(buf, 0xCC, sizeof(buf));
		r = request(0, sector, count * 512);
		printk("blk: r %u %u -> %d used %u bytes %x %x\n", sector, count, r,
		       (unsigned)ln_blk_reply.used_len, buf[0], buf[count * 512 - 1]);
	}
}

int main(void)
{
	struct lguest_device_desc *d;

	lguest_init();
	ln_setup_irqs();
	d = map_devices();
	if (ln_blk_setup(d) < 0 || ln_console_setup(d, ln_console_irq) < 0)
		lguest_crash("blk: no block device or console");
	printk("blk: ready, %u sectors\n", (unsigned)ln_blk->num_sectors);

	for (;;) {
		char chunk[sizeof(ln_inbuf)];
		unsigned n;

		wait_for(&ln_got);
		ln_got = 0;
		n = ln_take_input(chunk);
		for (unsigned i = 0; i < n; i++) {
			const char *line = ln_line_feed(chunk[i]);

			if (line && line[0])
				command(line);
		}
	}
}
