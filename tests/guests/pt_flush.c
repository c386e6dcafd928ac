/* SET_PMD and FLUSH_TLB.  Each time the Guest changes its tables behind the
 * Host's back, it first reads the stale value the shadow still holds (that
 * is what makes the hypercall's effect visible), then makes the hypercall
 * and reads again. */
#include "pt_lib.h"

static pte_t pgdir[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t kptes[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t uptes_a[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t uptes_b[1024] __attribute__((aligned(PAGE_SIZE)));

#define KVA	(PAGE_OFFSET + 0x380000UL)	/* a linear-map page nobody uses */

static unsigned long data(int n)
{
	return (unsigned long)__va(DATA_PAGE(n));
}

int main(void)
{
	u32 before, after, other;

	lguest_init();
	wr(data(0), 0xAAAA0000);
	wr(data(1), 0xBBBB1111);
	wr(data(2), 0xCCCC2222);
	wr(data(3), 0xDDDD3333);
	wr(KVA, 0x38383838);

	map_linear(pgdir, kptes);
	uptes_a[0] = DATA_PAGE(0) | 0x7;
	uptes_b[0] = DATA_PAGE(1) | 0x7;
	pte_set(&pgdir[PGD_INDEX(UVA)], __pa(uptes_a) | _PAGE_TABLE);
	new_pgtable(pgdir);
	printk("first=%x\n", rd(UVA));

	/* SET_PMD: the PGD entry now names another PTE page. */
	pte_set(&pgdir[PGD_INDEX(UVA)], __pa(uptes_b) | _PAGE_TABLE);
	before = rd(UVA);
	/* SET_PMD for a page directory the Host has no shadow of, or for the
	 * Switcher's index, does nothing. */
	hcall(LHCALL_SET_PMD, __pa(uptes_a), PGD_INDEX(UVA), 0);
	hcall(LHCALL_SET_PMD, __pa(pgdir), 1023, 0);
	other = rd(UVA);
	set_pmd(pgdir, PGD_INDEX(UVA), __pa(uptes_b) | _PAGE_TABLE);
	after = rd(UVA);
	printk("pmd_before=%x pmd_other=%x pmd_after=%x\n", before, other, after);

	/* FLUSH_TLB(0): a user PTE changed without SET_PTE.  NEW_PGTABLE of
	 * the page directory we are already on finds its shadow cached and
	 * flushes nothing (2.6.23 did the same). */
	pte_set(&uptes_b[0], DATA_PAGE(2) | 0x7);
	before = rd(UVA);
	new_pgtable(pgdir);
	other = rd(UVA);
	flush_tlb(0);
	after = rd(UVA);
	printk("flush0_before=%x flush0_same_cr3=%x flush0_after=%x\n", before, other, after);

	/* A kernel PTE changed without SET_PTE: FLUSH_TLB(0) leaves the kernel
	 * part alone, FLUSH_TLB(1) drops everything. */
	before = rd(KVA);
	pte_set(&kptes[PTE_INDEX(KVA)], DATA_PAGE(3) | _PAGE_KERNEL);
	pte_set(&uptes_b[0], DATA_PAGE(0) | 0x7);
	other = rd(KVA);
	flush_tlb(0);
	u32 k_after0 = rd(KVA);
	flush_tlb(1);
	after = rd(KVA);
	printk("kflush_before=%x kflush_stale=%x kflush0=%x kflush1=%x user=%x\n",
	       before, other, k_after0, after, rd(UVA));
	printk("kpte=%x\n", (unsigned)pte_get(&kptes[PTE_INDEX(KVA)]));
	return 0;
}
