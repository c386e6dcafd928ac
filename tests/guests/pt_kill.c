/* Page-table entries the Host must refuse, each killing the Guest with the
 * 2.6.23 message.  MODE (a -DMODE=n flag) picks the entry; the Guest prints
 * "before", touches it, and would print "after" if it lived:
 *   1  PTE with PWT                     -> "bad page table entry"
 *   2  PTE with PSE                     -> "bad page table entry"
 *   3  PTE for the last page below pfn_limit (fine: the Guest prints what
 *      the test put there), then for pfn_limit itself -> "bad page table entry"
 *   4  PGD entry with PWT               -> "bad page directory entry"
 *   5  PGD entry with PSE               -> "bad page directory entry"
 *   6  PGD entry with Global            -> "bad page directory entry"
 *   7  PGD entry at pfn_limit           -> "bad page directory entry"
 *   8  a PTE page under PGD index 1023, touched -> "attempt to access switcher pages"
 *   9  SET_PTE at 0xFFC01000            -> "attempt to access switcher pages"
 *  10  SET_PTE of an Accessed PTE with PWT, for a mapped PGD entry
 *                                       -> "bad page table entry"
 *  11  PTE for a page below pfn_limit that no memory backs (the test makes
 *      pfn_limit larger than the Launcher's buffer) -> "failed to get page 1536"
 *  12  NEW_PGTABLE to a page directory beyond pfn_limit -> "bad read address ..."
 * PFN_LIMIT is passed in by the test. */
#include "pt_lib.h"

#ifndef MODE
#define MODE 1
#endif
#ifndef PFN_LIMIT
#define PFN_LIMIT 1025
#endif

static pte_t pgdir[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t kptes[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t uptes[1024] __attribute__((aligned(PAGE_SIZE)));

#define U_FLAGS	(_PAGE_PRESENT | _PAGE_RW | _PAGE_USER)
#define SW_VA	0xFFC00000UL

static void map_user(pte_t pgd_flags_extra, pte_t pte)
{
	pte_set(&uptes[0], pte);
	pte_set(&pgdir[PGD_INDEX(UVA)], (__pa(uptes) | _PAGE_TABLE) ^ pgd_flags_extra);
}

int main(void)
{
	lguest_init();
	map_linear(pgdir, kptes);
	map_user(0, DATA_PAGE(0) | U_FLAGS);
	new_pgtable(pgdir);

#if MODE == 1
	pte_set(&uptes[0], DATA_PAGE(0) | U_FLAGS | _PAGE_PWT);
#elif MODE == 2
	pte_set(&uptes[0], DATA_PAGE(0) | U_FLAGS | _PAGE_PSE);
#elif MODE == 3
	pte_set(&uptes[0], ((PFN_LIMIT - 1UL) << 12) | U_FLAGS);
	printk("last=%x\n", rd(UVA));
	pte_set(&uptes[0], ((unsigned long)PFN_LIMIT << 12) | U_FLAGS);
	flush_tlb(0);
#elif MODE == 4
	pte_set(&pgdir[PGD_INDEX(UVA)], __pa(uptes) | _PAGE_TABLE | _PAGE_PWT);
#elif MODE == 5
	pte_set(&pgdir[PGD_INDEX(UVA)], __pa(uptes) | _PAGE_TABLE | _PAGE_PSE);
#elif MODE == 6
	pte_set(&pgdir[PGD_INDEX(UVA)], __pa(uptes) | _PAGE_TABLE | 0x100);
#elif MODE == 7
	pte_set(&pgdir[PGD_INDEX(UVA)], ((unsigned long)PFN_LIMIT << 12) | _PAGE_TABLE);
	flush_tlb(0);
#elif MODE == 8
	pte_set(&uptes[PTE_INDEX(SW_VA)], DATA_PAGE(0) | U_FLAGS);
	pte_set(&pgdir[PGD_INDEX(SW_VA)], __pa(uptes) | _PAGE_TABLE);
#elif MODE == 9
	printk("before\n");
	hcall(LHCALL_SET_PTE, __pa(pgdir), SW_VA + PAGE_SIZE, DATA_PAGE(0) | U_FLAGS);
	printk("after\n");
#elif MODE == 10
	rd(UVA);		/* the shadow now has a PTE page for UVA */
	printk("before\n");
	set_pte_at(pgdir, &uptes[0], UVA,
		   DATA_PAGE(0) | U_FLAGS | _PAGE_ACCESSED | _PAGE_PWT);
	printk("after\n");
#elif MODE == 11
	pte_set(&uptes[0], (1536UL << 12) | U_FLAGS);
	flush_tlb(0);
#elif MODE == 12
	new_pgtable((pte_t *)__va(PFN_LIMIT << 12));
#endif
	/* The flushes above are only there so that the shadow of UVA's PGD
	 * entry is rebuilt from the Guest's entries: the touch decides. */
#if MODE != 9 && MODE != 10
	printk("before\n");
	printk("value=%x\n", probe_read(MODE == 8 ? SW_VA : UVA));
	printk("after\n");
#endif
	return 0;
}
