#include "os.h"

/*G:230 Page tables of our own.  The Launcher's page tables map RAM at
 * PAGE_OFFSET and nothing else, and they live at the top of RAM where
 * nobody promised to leave them alone.  Worse, the lguest bus keeps its
 * device page and the devices' own pages *above* RAM, which the Launcher
 * never mapped.  So, like Linux's paging_init(), the Guest builds a page
 * directory of its own and tells the Host to switch to it.
 *
 * Our address space has two parts:
 *  - the linear map: physical 0 .. lowmem_size at PAGE_OFFSET, so __va()
 *    and __pa() keep working (896 MB at most, as in Linux);
 *  - an "ioremap" window at 0xFF800000, just below the 4 MB the Host keeps
 *    for its Switcher, where lguest_map() maps device pages on demand.
 *
 * The page directory sits in .bss; the page-table pages come from a simple
 * bump allocator over the free RAM just past the end of the kernel image,
 * which also gives the drivers their buffers (alloc_bootmem). */
#define PTE_P		0x001
#define PTE_RW		0x002
#define PTE_US		0x004
#define PTE_A		0x020
#define PTE_D		0x040
#define _PAGE_KERNEL	(PTE_P | PTE_RW | PTE_A | PTE_D)
#define _PAGE_TABLE	(PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D)
#define PGDIR_SIZE	(4 * MB)
#define MAXMEM		(896 * MB)
#define IOMAP_BASE	0xFF800000UL
#define IOMAP_PAGES	1024

static u32 swapper_pg_dir[1024] __attribute__((aligned(PAGE_SIZE)));
static unsigned long next_free_page, free_limit;
static unsigned iomap_used;
static int paging_live;
unsigned long lowmem_size;
extern char _end[];
/*:*/

/* Memory that is never given back, and not cleared: clearing costs an
 * emulated store per word, so only the callers that need zeroes pay. */
void *alloc_bootmem(unsigned long size)
{
	unsigned long phys = next_free_page;

	size = PAGE_ALIGN(size);
	if (free_limit < phys || size > free_limit - phys)
		panic("out of boot memory");
	next_free_page += size;
	return __va(phys);
}

void clear_page(void *page)
{
	void *d = page;
	unsigned long n = PAGE_SIZE / 4;

	__asm__ __volatile__("rep stosl" : "+D"(d), "+c"(n) : "a"(0) : "memory");
}

static u32 *alloc_page_table(void)
{
	return alloc_bootmem(PAGE_SIZE);
}

/* The page-table page for virtual address v, created if need be.  Once our
 * page directory is live, a new entry is announced with SET_PMD, exactly
 * as Linux's set_pmd() did under lguest.  A page the caller is about to fill
 * completely ("full") is not cleared first. */
static u32 *pte_page(unsigned long v, int full)
{
	unsigned idx = v >> 22;
	u32 *pt;

	if (swapper_pg_dir[idx] & PTE_P)
		return __va(swapper_pg_dir[idx] & PAGE_MASK);
	pt = alloc_page_table();
	if (!full)
		clear_page(pt);
	swapper_pg_dir[idx] = __pa(pt) | _PAGE_TABLE;
	if (paging_live)
		hcall(LHCALL_SET_PMD, __pa(swapper_pg_dir), idx, 0);
	return pt;
}

/*G:240 Filling in the linear map is the slow part of booting, because the
 * Guest's instructions are emulated one by one on this machine: 64 MB is
 * 16384 entries.  So the loop below writes eight entries a turn, and runs
 * twice: paging_init() maps only the first 4 MB (the kernel, its stack,
 * the boot parameters and these very page tables) before the banner, and
 * paging_init_late() maps the rest of RAM after it.
 *
 * No SET_PTE hypercall is needed for entries that were not present before:
 * the Host only ever copies present entries into its shadow tables, so it
 * cannot be holding a stale copy of one of these. */
static void map_linear(unsigned long start, unsigned long end)
{
	while (start < end) {
		unsigned long base = start & ~(PGDIR_SIZE - 1);
		unsigned long stop = base + PGDIR_SIZE < end ? base + PGDIR_SIZE : end;
		u32 *pt = pte_page(PAGE_OFFSET + start, start == base && stop == base + PGDIR_SIZE);
		u32 *p = pt + ((start >> 12) & 1023);
		u32 pte = start | _PAGE_KERNEL;

		for (; start + 8 * PAGE_SIZE <= stop; start += 8 * PAGE_SIZE, p += 8) {
			p[0] = pte;
			p[1] = pte + 1 * PAGE_SIZE;
			p[2] = pte + 2 * PAGE_SIZE;
			p[3] = pte + 3 * PAGE_SIZE;
			p[4] = pte + 4 * PAGE_SIZE;
			p[5] = pte + 5 * PAGE_SIZE;
			p[6] = pte + 6 * PAGE_SIZE;
			p[7] = pte + 7 * PAGE_SIZE;
			pte += 8 * PAGE_SIZE;
		}
		for (; start < stop; start += PAGE_SIZE, pte += PAGE_SIZE)
			*p++ = pte;
	}
}

void paging_init(void)
{
	unsigned long kernel_end = PAGE_ALIGN(__pa(_end));
	unsigned long initrd = *(u32 *)((char *)boot_params + 0x21C);
	unsigned long launcher_tables = PAGE_SIZE * (1 + (mem_size + PGDIR_SIZE - 1) / PGDIR_SIZE);
	unsigned long first = mem_size < PGDIR_SIZE ? mem_size : PGDIR_SIZE;

	lowmem_size = mem_size < MAXMEM ? mem_size : MAXMEM;
	/* Our tables must not land on the Launcher's (still in use) or the
	 * initrd, and must sit in the first 4 MB, which we map first. */
	next_free_page = kernel_end;
	if (PAGE_ALIGN(initrd) + launcher_tables < mem_size)
		free_limit = mem_size - PAGE_ALIGN(initrd) - launcher_tables;
	if (free_limit > first)
		free_limit = first;
	if (kernel_end + 2 * PAGE_SIZE + PAGE_SIZE * (lowmem_size / PGDIR_SIZE) > free_limit)
		panic("not enough memory");

	map_linear(0, first);
	pte_page(IOMAP_BASE, 0);
	hcall(LHCALL_NEW_PGTABLE, __pa(swapper_pg_dir), 0, 0);
	paging_live = 1;
}

void paging_init_late(void)
{
	unsigned long initrd = *(u32 *)((char *)boot_params + 0x21C);

	map_linear(PGDIR_SIZE < lowmem_size ? PGDIR_SIZE : lowmem_size, lowmem_size);
	/* The Launcher's page tables are garbage now; the initrd is not ours. */
	free_limit = lowmem_size - (PAGE_ALIGN(initrd) < lowmem_size ? PAGE_ALIGN(initrd) : 0);
}
/*:*/

/*G:250 lguest_map() is 2.6.23's name for "ioremap a device's pages": the
 * device page and each device's own pages are physical memory above RAM,
 * and a driver needs a virtual address for them.  We hand out pages of the
 * window in order and never give them back; a Guest has at most sixteen
 * devices, most with a page or none.  When paging is live, each new entry
 * goes to the Host with SET_PTE, as set_pte_at() did; because the entry
 * already has Accessed and Dirty set, the Host installs it at once instead
 * of waiting for the first fault. */
void *lguest_map(unsigned long phys, unsigned pages)
{
	unsigned long virt = IOMAP_BASE + iomap_used * PAGE_SIZE;
	u32 *pt = pte_page(IOMAP_BASE, 0);
	unsigned i;

	if (pages > IOMAP_PAGES - iomap_used)
		panic("lguest_map: window full");
	for (i = 0; i < pages; i++) {
		u32 pte = (phys + i * PAGE_SIZE) | _PAGE_KERNEL;

		pt[iomap_used] = pte;
		if (paging_live)
			hcall(LHCALL_SET_PTE, __pa(swapper_pg_dir),
			      IOMAP_BASE + iomap_used * PAGE_SIZE, pte);
		iomap_used++;
	}
	return (void *)(virt + (phys & ~PAGE_MASK));
}
/*:*/
