/* SET_STACK and stack pinning, on the Guest's own page tables.  MODE (a
 * -DMODE=n flag) picks the scenario:
 *   0  a two-page stack nobody has touched: the Host faults both pages in
 *      (as writes), and again after FLUSH_TLB(1) and on a fresh shadow
 *   1  pages = 3            -> "bad stack pages 3"
 *   2  ss = 0x68 (RPL 0)    -> "bad stack segment 104"
 *   3  esp in a range the Guest's tables do not map -> "bad stack page 0x7fffff"
 *   4  esp in a read-only page -> "bad stack page 0xc02fffff"
 *   5  esp 0: the stack page 0xFFFFFFFF is the Switcher's, and 2.6.23 says so
 *      before it looks at the Guest's tables -> "attempt to access switcher pages"
 * Lines "step=..." are where the test looks at the Host's shadow entries. */
#include "pt_lib.h"

#ifndef MODE
#define MODE 0
#endif

static pte_t pgdir[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t pgdir2[1024] __attribute__((aligned(PAGE_SIZE), unused));
static pte_t kptes[1024] __attribute__((aligned(PAGE_SIZE)));

#define STACK_TOP	(PAGE_OFFSET + 0x300000UL)	/* untouched linear-map pages */

static pte_t *kpte(unsigned long va)
{
	return &kptes[PTE_INDEX(va)];
}

static void __attribute__((unused)) show(const char *step)
{
	printk("step=%s pte1=%x pte2=%x\n", step, (unsigned)pte_get(kpte(STACK_TOP - 1)),
	       (unsigned)pte_get(kpte(STACK_TOP - 1 - PAGE_SIZE)));
}

/* Clean entries for the stack pages, so we can see the Host set A and D. */
static void clean_stack_ptes(void)
{
	pte_set(kpte(STACK_TOP - 1), __pa(STACK_TOP - PAGE_SIZE) | _PAGE_PRESENT | _PAGE_RW);
	pte_set(kpte(STACK_TOP - 1 - PAGE_SIZE),
		__pa(STACK_TOP - 2 * PAGE_SIZE) | _PAGE_PRESENT | _PAGE_RW);
}

int main(void)
{
	lguest_init();
	map_linear(pgdir, kptes);
	clean_stack_ptes();
	new_pgtable(pgdir);

#if MODE == 0
	show("before");
	hcall(LHCALL_SET_STACK, __KERNEL_DS, STACK_TOP, 2);
	show("pinned");
	/* Forget Accessed and Dirty behind the Host's back: the Host sets them
	 * again when it re-pins the stack, after FLUSH_TLB(1) and on a blank
	 * shadow (the test makes sure NEW_PGTABLE gets one). */
	clean_stack_ptes();
	flush_tlb(1);
	show("flushed");
	clean_stack_ptes();
	pgdir2[PGD_INDEX(PAGE_OFFSET)] = pgdir[PGD_INDEX(PAGE_OFFSET)];
	new_pgtable(pgdir2);
	show("new_pgtable");
#elif MODE == 1
	hcall(LHCALL_SET_STACK, __KERNEL_DS, STACK_TOP, 3);
#elif MODE == 2
	hcall(LHCALL_SET_STACK, __KERNEL_DS & ~3, STACK_TOP, 1);
#elif MODE == 3
	hcall(LHCALL_SET_STACK, __KERNEL_DS, 0x00800000, 1);
#elif MODE == 4
	set_pte_at(pgdir, kpte(STACK_TOP - 1), STACK_TOP - 1,
		   __pa(STACK_TOP - PAGE_SIZE) | _PAGE_PRESENT);
	hcall(LHCALL_SET_STACK, __KERNEL_DS, STACK_TOP, 1);
#elif MODE == 5
	hcall(LHCALL_SET_STACK, __KERNEL_DS, 0, 1);
#endif
	printk("still alive\n");
	return 0;
}
