/* Helpers for the page-table test Guests (tests/test_page_tables.py): i386
 * 2-level page-table flags, building a page directory the way the Launcher
 * does (§8.2), and the page-table hypercalls as 2.6.23's Guest makes them. */
#ifndef PT_LIB_H
#define PT_LIB_H
#include "lguest.h"

#define _PAGE_PRESENT	0x001
#define _PAGE_RW	0x002
#define _PAGE_USER	0x004
#define _PAGE_PWT	0x008
#define _PAGE_ACCESSED	0x020
#define _PAGE_DIRTY	0x040
#define _PAGE_PSE	0x080
#define _PAGE_TABLE	0x067	/* P|RW|US|A|D: every flag a PGD entry may carry */
#define _PAGE_KERNEL	0x063	/* P|RW|A|D */

#define PGD_INDEX(va)	((unsigned long)(va) >> 22)
#define PTE_INDEX(va)	(((unsigned long)(va) >> 12) & 1023)

/* Guest-physical pages for test data: above the image (at 1 MiB) and below
 * the Launcher's page tables (at the top of the 4 MiB). */
#define DATA_PAGE(n)	(0x200000UL + (unsigned long)(n) * PAGE_SIZE)

/* A user-range virtual address: PGD index 1, PTE index 0. */
#define UVA		0x00400000UL

typedef unsigned long pte_t;

/* The Host changes PTEs behind the compiler's back (Accessed, Dirty), so
 * page-table entries and test pages are only touched through volatile. */
static inline u32 rd(unsigned long va)
{
	return *(volatile u32 *)va;
}

static inline void wr(unsigned long va, u32 v)
{
	*(volatile u32 *)va = v;
}

static inline pte_t pte_get(pte_t *p)
{
	return *(volatile pte_t *)p;
}

static inline void pte_set(pte_t *p, pte_t v)
{
	*(volatile pte_t *)p = v;
}

/* The kernel's linear map, like the Launcher's: PAGE_OFFSET + n is physical
 * n for the 4 MiB of RAM. */
static inline void map_linear(pte_t *pgd, pte_t *ptes)
{
	unsigned i;

	for (i = 0; i < 1024; i++)
		ptes[i] = (i << 12) | _PAGE_KERNEL;
	pte_set(&pgd[PGD_INDEX(PAGE_OFFSET)], __pa(ptes) | _PAGE_TABLE);
}

static inline void new_pgtable(pte_t *pgd)
{
	hcall(LHCALL_NEW_PGTABLE, __pa(pgd), 0, 0);
}

/* set_pte_at(): the Guest's own entry first, then SET_PTE. */
static inline void set_pte_at(pte_t *pgd, pte_t *ptep, unsigned long va, pte_t pte)
{
	pte_set(ptep, pte);
	hcall(LHCALL_SET_PTE, __pa(pgd), va, pte);
}

/* set_pmd(): the entry, then SET_PMD(pgdir page, index). */
static inline void set_pmd(pte_t *pgd, unsigned idx, pte_t val)
{
	pte_set(&pgd[idx], val);
	hcall(LHCALL_SET_PMD, __pa(pgd), idx, 0);
}

static inline void flush_tlb(int all)
{
	hcall(LHCALL_FLUSH_TLB, all, 0, 0);
}

/* A load and a store with fixed two-byte encodings (8b 02 and 89 02), so a
 * #PF handler can step over them with eip += 2.  A faulting load leaves the
 * marker in %eax. */
#define PROBE_FAILED	0xFA17EDu

static inline u32 probe_read(unsigned long va)
{
	u32 v = PROBE_FAILED;

	__asm__ __volatile__("movl (%%edx), %%eax" : "+a"(v) : "d"(va) : "memory");
	return v;
}

static inline void probe_write(unsigned long va, u32 v)
{
	__asm__ __volatile__("movl %%eax, (%%edx)" : "+a"(v) : "d"(va) : "memory");
}

#endif
