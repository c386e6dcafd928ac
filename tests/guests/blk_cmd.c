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

struct lguest_block_page {
	int type;
	u32 sector, bytes;
	int result;
	u32 num_sectors;
};

static u8 buf[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static struct lguest_dma req, reply;
static volatile unsigned blk_irqs, got;
static volatile struct lguest_block_page *blk;
static unsigned long blk_key;
static char inbuf[256], line[256];
static struct lguest_dma in_dma;
static unsigned nline;
static int con_irq;

static void block_irq(struct trapframe *tf)
{
	(void)tf;
	if (blk->result)
		blk_irqs++;
}

static void console_irq(struct trapframe *tf)
{
	(void)tf;
	got = 1;
}

static void bind_console(void)
{
	in_dma.used_len = 0;
	in_dma.addr[0] = __pa(inbuf);
	in_dma.len[0] = sizeof(inbuf);
	in_dma.len[1] = 0;
	bind_dma(LGUEST_CONSOLE_DMA_KEY, &in_dma, 1, con_irq);
}

static int request(int write, u32 sector, u32 bytes)
{
	blk->type = write;
	blk->sector = sector;
	blk->bytes = bytes;
	blk->result = 0;
	memset(&req, 0, sizeof(req));
	memset(&reply, 0, sizeof(reply));
	if (write) {
		req.addr[0] = __pa(buf);
		req.len[0] = bytes;
	} else {
		reply.addr[0] = __pa(buf);
		reply.len[0] = bytes;
	}
	blk_irqs = 0;
	send_dma(blk_key, &req);
	wait_for(&blk_irqs);
	return blk->result;
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
		       (unsigned)reply.used_len, buf[0], buf[count * 512 - 1]);
	}
}

int main(void)
{
	struct lguest_device_desc *d;
	int b, con;

	lguest_init();
	ln_setup_irqs();
	d = map_devices();
	b = find_device(d, LGUEST_DEVICE_T_BLOCK);
	con = find_device(d, LGUEST_DEVICE_T_CONSOLE);
	if (b < 0 || con < 0)
		lguest_crash("blk: no block device or console");
	blk = dev_page(&d[b]);
	blk_key = dev_page_pa(&d[b]);
	install_trap(32 + b + 1, block_irq, GATE_INTERRUPT, 0);
	bind_dma(blk_key, &reply, 1, b + 1);
	con_irq = con + 1;
	install_trap(32 + con_irq, console_irq, GATE_INTERRUPT, 0);
	bind_console();
	printk("blk: ready, %u sectors\n", (unsigned)blk->num_sectors);

	for (;;) {
		char chunk[sizeof(inbuf)];
		unsigned n;

		wait_for(&got);
		got = 0;
		n = in_dma.used_len;
		if (n > sizeof(inbuf))
			n = sizeof(inbuf);
		memcpy(chunk, inbuf, n);
		in_dma.used_len = 0;
		for (unsigned i = 0; i < n; i++) {
			char c = chunk[i];

			if (c == '\n' || c == '\r') {
				line[nline] = 0;
				nline = 0;
				if (line[0])
					command(line);
			} else if (nline < sizeof(line) - 1) {
				line[nline++] = c;
			}
		}
	}
}
