/* Helpers for the Launcher's test Guests (tests/test_launcher*.py): finding
 * the device descriptor page the Launcher put right after RAM, mapping it
 * and the device pages, and waiting for an interrupt with HALT. */
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

#endif
