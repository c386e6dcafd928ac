/* Paging work in a loop, for counting exits (tests/test_direct.py) and timing them
 * (bench/paging.py) on each paging backend.  Between checkpoints 1 and 2: N page
 * faults the Guest handles (its handler maps the page with SET_PTE); 2 to 3: N
 * rounds of a full TLB flush and a touch of TOUCH pages its tables already map
 * (lguest's shadows refill each on a fault; the CPU just walks the tables); 3 to 4:
 * N context switches, NEW_PGTABLE to the other page directory and a read there. */
#include "pt_lib.h"
#include "checkpoint.h"

#ifndef N
#define N 16
#endif
#define TOUCH 16

static pte_t pgd_a[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t pgd_b[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t kptes[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t uptes_a[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t uptes_b[1024] __attribute__((aligned(PAGE_SIZE)));
static volatile unsigned faults, sum;

static void pf(struct trapframe *tf)
{
	unsigned long va = lguest_data.cr2 & ~(PAGE_SIZE - 1);

	(void)tf;
	faults++;
	set_pte_at(pgd_a, &uptes_a[PTE_INDEX(va)], va,
		   DATA_PAGE(PTE_INDEX(va) % 16) | _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY);
}

int main(void)
{
	unsigned i, p;

	lguest_init();
	install_trap(14, pf, GATE_INTERRUPT, 0);
	map_linear(pgd_a, kptes);
	map_linear(pgd_b, kptes);
	for (p = 0; p < TOUCH; p++) {
		pte_set(&uptes_a[p], DATA_PAGE(p) | _PAGE_KERNEL);
		pte_set(&uptes_b[p], DATA_PAGE(15 - p) | _PAGE_KERNEL);
	}
	pte_set(&pgd_a[PGD_INDEX(UVA)], __pa(uptes_a) | _PAGE_TABLE);
	pte_set(&pgd_b[PGD_INDEX(UVA)], __pa(uptes_b) | _PAGE_TABLE);
	new_pgtable(pgd_a);

	checkpoint(1);
	for (i = 0; i < N; i++) {
		unsigned long va = UVA + (i % TOUCH) * PAGE_SIZE;

		set_pte_at(pgd_a, &uptes_a[PTE_INDEX(va)], va, 0);
		sum += rd(va);
	}
	checkpoint(2);
	for (i = 0; i < N; i++) {
		hcall(LHCALL_FLUSH_TLB, 1, 0, 0);
		for (p = 0; p < TOUCH; p++)
			sum += rd(UVA + p * PAGE_SIZE);
	}
	checkpoint(3);
	for (i = 0; i < N; i++) {
		new_pgtable(pgd_b);
		sum += rd(UVA);
		new_pgtable(pgd_a);
		sum += rd(UVA);
	}
	checkpoint(4);
	printk("faults=%u\n", faults);
	return 0;
}
