/* Helpers for the Launcher's test Guests (tests/test_launcher*.py,
 * tests/test_block_faults.py): finding the device descriptor page the
 * Launcher put right after RAM, mapping it and the device pages, waiting for
 * an interrupt with HALT, console input, and block requests. */
#ifndef LN_LIB_H
#define LN_LIB_H
#include "lguest.h"

#define LGUEST_DEVICE_T_CONSOLE	1
#define LGUEST_DEVICE_T_NET	2
#define LGUEST_DEVICE_T_BLOCK	3
#define LGUEST_NET_F_NOCSUM	0x4000
#define LGUEST_MAX_DEVICES	16

struct lguest_device_desc {
	u16 type, features, status, num_pages;
	u32 pfn;
};

/* Where we map the descriptor page and the 16 pages after it. */
#define DEV_VA		0xFF000000UL
#define DEV_PAGES	32

static inline u32 bp_u32(unsigned off)
{
	return *(volatile u32 *)((char *)boot_params + off);
}

/* RAM size: e820_map[0].size (low 32 bits), which is where the Guest finds
 * the descriptor page (max_pfn << 12). */
static inline unsigned long ram_size(void)
{
	return bp_u32(0x2D0 + 8);
}

static unsigned long ln_devptes[1024] __attribute__((aligned(PAGE_SIZE)));

/* The Launcher's page directory sits right below the initrd (or the top of
 * RAM): add one PTE page mapping DEV_VA onwards to the pages from RAM's end,
 * as 2.6.23's Guest mapped its device page with lguest_map(). */
static inline struct lguest_device_desc *map_devices(void)
{
	unsigned long mem = ram_size();
	unsigned long pgdir = mem - bp_u32(0x21C) - PAGE_SIZE;
	unsigned long *pgd = __va(pgdir);

	for (unsigned i = 0; i < DEV_PAGES; i++)
		ln_devptes[i] = (mem + i * PAGE_SIZE) | 0x063;
	pgd[DEV_VA >> 22] = __pa(ln_devptes) | 0x067;
	hcall(LHCALL_SET_PMD, pgdir, DEV_VA >> 22, 0);
	return (struct lguest_device_desc *)DEV_VA;
}

/* A device's first page, Guest-virtual and Guest-physical. */
static inline void *dev_page(const struct lguest_device_desc *d)
{
	return (char *)DEV_VA + (d->pfn * PAGE_SIZE - ram_size());
}

static inline unsigned long dev_page_pa(const struct lguest_device_desc *d)
{
	return d->pfn * PAGE_SIZE;
}

static inline int find_device(const struct lguest_device_desc *d, unsigned type)
{
	for (int i = 0; i < LGUEST_MAX_DEVICES; i++)
		if (d[i].type == type)
			return i;
	return -1;
}

/* Sleep until *flag is set by an interrupt handler: check with virtual
 * interrupts off, then HALT, which wakes us with them on ("sti; hlt"). */
static inline void wait_for(volatile unsigned *flag)
{
	for (;;) {
		lguest_data.irq_enabled = 0;
		if (*flag)
			break;
		hcall(LHCALL_HALT, 0, 0, 0);
	}
	lguest_data.irq_enabled = X86_EFLAGS_IF;
}

static volatile unsigned ln_ticks;

static void ln_timer(struct trapframe *tf)
{
	(void)tf;
	ln_ticks++;
}

/* Sleep about ms milliseconds (IRQ 0, the clock event). */
static inline void sleep_ms(unsigned ms)
{
	ln_ticks = 0;
	hcall(LHCALL_SET_CLOCKEVENT, ms * 1000000UL, 0, 0);
	wait_for(&ln_ticks);
}

static inline void ln_setup_irqs(void)
{
	install_trap(32, ln_timer, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	lguest_data.irq_enabled = X86_EFLAGS_IF;
}

static inline unsigned long bind_dma(unsigned long key, void *dmas, unsigned num, unsigned irq)
{
	return hcall(LHCALL_BIND_DMA, key, __pa(dmas), (num << 8) | irq);
}

static inline void send_dma(unsigned long key, struct lguest_dma *dma)
{
	hcall(LHCALL_SEND_DMA, key, __pa(dma), 0);
}

/* The console's input (2.6.23's lguest_cons): one buffer bound at the
 * console key, which the Launcher fills before it raises the console's
 * interrupt.  The Guest gathers lines from what comes. */
static char ln_inbuf[256];
static struct lguest_dma ln_in_dma;
static volatile unsigned ln_got;
static int ln_con_irq;
static char ln_line[256];
static unsigned ln_nline;

static __attribute__((unused)) void ln_console_irq(struct trapframe *tf)
{
	(void)tf;
	ln_got = 1;
}

static inline void ln_bind_console(void)
{
	ln_in_dma.used_len = 0;
	ln_in_dma.addr[0] = __pa(ln_inbuf);
	ln_in_dma.len[0] = sizeof(ln_inbuf);
	ln_in_dma.len[1] = 0;
	bind_dma(LGUEST_CONSOLE_DMA_KEY, &ln_in_dma, 1, ln_con_irq);
}

/* Find the console, take its interrupt (`handler` must set ln_got) and bind
 * the input buffer; -1 if there is no console. */
static inline int ln_console_setup(const struct lguest_device_desc *d,
				   void (*handler)(struct trapframe *))
{
	int con = find_device(d, LGUEST_DEVICE_T_CONSOLE);

	if (con < 0)
		return con;
	ln_con_irq = con + 1;
	install_trap(32 + ln_con_irq, handler, GATE_INTERRUPT, 0);
	ln_bind_console();
	return con;
}

/* Copy the input into chunk (sizeof(ln_inbuf) bytes) and free the buffer at
 * once: the Launcher may fill it again while we work on this chunk. */
static inline unsigned ln_take_input(char *chunk)
{
	unsigned n = ln_in_dma.used_len;

	if (n > sizeof(ln_inbuf))
		n = sizeof(ln_inbuf);
	memcpy(chunk, ln_inbuf, n);
	ln_in_dma.used_len = 0;
	return n;
}

/* Gather one byte; at the end of a line, the line (0-terminated), else 0. */
static inline const char *ln_line_feed(char c)
{
	if (c == '\n' || c == '\r') {
		ln_line[ln_nline] = 0;
		ln_nline = 0;
		return ln_line;
	}
	if (ln_nline < sizeof(ln_line) - 1)
		ln_line[ln_nline++] = c;
	return 0;
}

/* The block device (2.6.23's lguest_blk), one request at a time.  Its page
 * is shared with the Launcher; a read's data comes into the reply buffer
 * bound at the page's key, and the interrupt counts once the Launcher has
 * put a result in the page. */
struct lguest_block_page {
	int type;			/* 0 read, else write */
	u32 sector, bytes;
	int result;			/* 0 pending, 1 done, 2 error */
	u32 num_sectors;
};

static struct lguest_dma ln_blk_req, ln_blk_reply;
static volatile unsigned ln_blk_irqs;
static volatile struct lguest_block_page *ln_blk;
static unsigned long ln_blk_key;

static __attribute__((unused)) void ln_blk_irq(struct trapframe *tf)
{
	(void)tf;
	if (ln_blk->result)
		ln_blk_irqs++;
}

/* Find the block device, take its interrupt and bind the reply buffer; -1
 * if there is none. */
static inline int ln_blk_setup(const struct lguest_device_desc *d)
{
	int b = find_device(d, LGUEST_DEVICE_T_BLOCK);

	if (b < 0)
		return b;
	ln_blk = dev_page(&d[b]);
	ln_blk_key = dev_page_pa(&d[b]);
	install_trap(32 + b + 1, ln_blk_irq, GATE_INTERRUPT, 0);
	bind_dma(ln_blk_key, &ln_blk_reply, 1, b + 1);
	return b;
}

/* One request of n sections (addr, len): a write's go in the DMA we send, a
 * read's describe the reply buffer and what we send is only the doorbell.
 * Sleeps until the interrupt; returns the result. */
static inline int ln_blk_request(int write, u32 sector, u32 bytes, unsigned n,
				 const unsigned long *addr, const u16 *len)
{
	struct lguest_dma *d = write ? &ln_blk_req : &ln_blk_reply;

	ln_blk->type = write;
	ln_blk->sector = sector;
	ln_blk->bytes = bytes;
	ln_blk->result = 0;
	memset(&ln_blk_req, 0, sizeof(ln_blk_req));
	memset(&ln_blk_reply, 0, sizeof(ln_blk_reply));
	for (unsigned i = 0; i < n; i++) {
		d->addr[i] = addr[i];
		d->len[i] = len[i];
	}
	ln_blk_irqs = 0;
	send_dma(ln_blk_key, &ln_blk_req);
	wait_for(&ln_blk_irqs);
	return ln_blk->result;
}

#endif
