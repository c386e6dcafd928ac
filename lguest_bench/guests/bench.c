/*M:900 The lguest-bench Guest.  One small kernel with one loop per benchmark,
 * chosen when it is built (-DMODE=..., -DN=ops per lap, -DLAPS=laps).  Before
 * the first lap and after each one it sends an empty DMA to key 0x2000, which
 * ends the Launcher's read(): the Launcher times the laps from those, so every
 * figure is "one lap / N", with the marker's own cost spread over N. :*/
#include "lguest.h"

#define MARK_KEY	0x2000
#define DMA_KEY		0x3000
#define M_HYPERCALL	1
#define M_ASYNC		2
#define M_PIO		3
#define M_PAGEFAULT	4
#define M_PTE		5
#define M_CTXSW		6
#define M_TIMER		7
#define M_DMAOUT	8
#define M_MEMLIN	9
#define M_MEMRAND	10
#define M_IRQ		11
#define IRQ_PLEASE	0x1000	/* a marker asking the Launcher for IRQ 1 */

#ifndef N
#define N 100
#endif
#ifndef LAPS
#define LAPS 5
#endif
#ifndef MEM_MB
#define MEM_MB 64
#endif

static struct lguest_dma mark_dma, out_dma;
static volatile unsigned ticks;
static unsigned long pgd_a[1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned long pgd_b[1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned long kptes[4][1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned long uptes[1024] __attribute__((aligned(PAGE_SIZE)));
static char page[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));
static volatile unsigned sink;

static void mark(unsigned tag)
{
	mark_dma.used_len = 0;
	mark_dma.len[0] = 0;
	mark_dma.addr[0] = tag;
	hcall(LHCALL_SEND_DMA, MARK_KEY, __pa(&mark_dma), 0);
}

static __attribute__((unused)) void skip_load(struct trapframe *tf)
{
	tf->eip += 2;			/* movl (%ecx),%eax */
}

static void timer_irq(struct trapframe *tf)
{
	(void)tf;
	ticks++;
}

static volatile unsigned irqs;

static void launcher_irq(struct trapframe *tf)
{
	(void)tf;
	irqs++;
}

/* Two page directories mapping the first 16 MB of the kernel (the image, its
 * stack and bss), one of them also a user page for SET_PTE to change. */
static __attribute__((unused)) void own_page_tables(void)
{
	for (unsigned t = 0; t < 4; t++) {
		for (unsigned i = 0; i < 1024; i++)
			kptes[t][i] = ((t * 1024 + i) << 12) | 0x63;
		pgd_a[(PAGE_OFFSET >> 22) + t] = __pa(kptes[t]) | 0x67;
		pgd_b[(PAGE_OFFSET >> 22) + t] = __pa(kptes[t]) | 0x67;
	}
	pgd_a[1] = __pa(uptes) | 0x67;
	hcall(LHCALL_NEW_PGTABLE, __pa(pgd_a), 0, 0);
}

static void one_op(unsigned i)
{
#if MODE == M_HYPERCALL
	(void)i;
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
#elif MODE == M_ASYNC
	unsigned slot = i % LHCALL_RING_SIZE;
	while (lguest_data.hcall_status[slot] != 0xFF)
		hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	lguest_data.hcalls[slot].eax = LHCALL_FLUSH_ASYNC;
	wmb();
	lguest_data.hcall_status[slot] = 0;
	if (slot == LHCALL_RING_SIZE - 1)
		hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);	/* one exit drains 64 */
#elif MODE == M_PIO
	unsigned char v;
	(void)i;
	__asm__ volatile("inb $0x80, %0" : "=a"(v));
	sink += v;
#elif MODE == M_PAGEFAULT
	unsigned long v;
	(void)i;
	__asm__ volatile("movl (%%ecx), %%eax" : "=a"(v) : "c"(0x00800000UL), "a"(0) : "memory");
	sink += v;
#elif MODE == M_PTE
	hcall(LHCALL_SET_PTE, __pa(pgd_a), 0x00400000UL, (__pa(page) + 0) | ((i & 1) ? 0x67 : 0x65));
#elif MODE == M_CTXSW
	hcall(LHCALL_NEW_PGTABLE, __pa((i & 1) ? pgd_a : pgd_b), 0, 0);
#elif MODE == M_TIMER
	unsigned t = ticks;
	(void)i;
	hcall(LHCALL_SET_CLOCKEVENT, 1000, 0, 0);	/* 1 us: as soon as the Host can */
	while (ticks == t)
		hcall(LHCALL_HALT, 0, 0, 0);
#elif MODE == M_DMAOUT
	(void)i;
	out_dma.used_len = 0;
	hcall(LHCALL_SEND_DMA, DMA_KEY, __pa(&out_dma), 0);
#elif MODE == M_IRQ
	/* Ask for IRQ 1 with a marker; the Launcher raises it with LHREQ_IRQ and its next read()
	 * delivers it before the Guest runs on. */
	unsigned seen = irqs;
	(void)i;
	mark(IRQ_PLEASE);
	while (irqs == seen)
		;
#elif MODE == M_MEMLIN
	/* One store per 64-byte line through MEM_MB of the kernel's linear map. */
	volatile unsigned *p = (volatile unsigned *)__va(16 << 20);
	for (unsigned long off = 0; off < (MEM_MB << 20) / 4; off += 16)
		p[off] = i;
#elif MODE == M_MEMRAND
	volatile unsigned *p = (volatile unsigned *)__va(16 << 20);
	unsigned x = i * 2654435761u + 1;
	for (unsigned long k = 0; k < (MEM_MB << 20) / 64; k++) {
		x = x * 1103515245u + 12345u;
		p[(x >> 4) & (((MEM_MB << 20) / 4 - 1) & ~15u)] = k;
	}
#endif
}

int main(void)
{
	lguest_init();
	install_trap(14, skip_load, GATE_INTERRUPT, 0);
	install_trap(32, timer_irq, GATE_INTERRUPT, 0);
	install_trap(33, launcher_irq, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	lguest_data.irq_enabled = X86_EFLAGS_IF;
#if MODE == M_PTE || MODE == M_CTXSW
	own_page_tables();
#endif
	out_dma.addr[0] = __pa(page);
	out_dma.len[0] = PAGE_SIZE;
	out_dma.len[1] = 0;
	mark(0);
	for (unsigned lap = 1; lap <= LAPS; lap++) {
		for (unsigned i = 0; i < N; i++)
			one_op(i);
		mark(lap);
	}
	return 0;
}
