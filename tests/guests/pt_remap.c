/* A Guest on its own page tables: a page directory and two PTE pages in
 * .bss (the kernel's linear map, as the Launcher built it, and a user page at
 * UVA), NEW_PGTABLE to them, Accessed/Dirty as the Host emulates them, then
 * SET_PTE remapping UVA to other pages.  Lines "step=..." are where the test
 * looks at the Host's shadow entries. */
#include "pt_lib.h"

static pte_t pgdir[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t kptes[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t uptes[1024] __attribute__((aligned(PAGE_SIZE)));

#define U_FLAGS	(_PAGE_PRESENT | _PAGE_RW | _PAGE_USER)

int main(void)
{
	pte_t *up = &uptes[PTE_INDEX(UVA)];
	pte_t after_read, after_write;
	u32 v, stale;

	lguest_init();
	/* Known contents, written through the Launcher's linear map. */
	wr((unsigned long)__va(DATA_PAGE(0)), 0xA0A0A0A0);
	wr((unsigned long)__va(DATA_PAGE(1)), 0xB1B1B1B1);
	wr((unsigned long)__va(DATA_PAGE(2)), 0xC2C2C2C2);

	map_linear(pgdir, kptes);
	pte_set(up, DATA_PAGE(0) | U_FLAGS);
	pte_set(&pgdir[PGD_INDEX(UVA)], __pa(uptes) | _PAGE_TABLE);
	new_pgtable(pgdir);
	printk("step=switched pgdir=%x\n", (unsigned)__pa(pgdir));

	/* A read sets Accessed only; a write then sets Dirty. */
	v = rd(UVA);
	after_read = pte_get(up);
	wr(UVA + 4, 0x12345678);
	after_write = pte_get(up);
	printk("read=%x pte_read=%x pte_write=%x linear=%x\n", v,
	       (unsigned)after_read, (unsigned)after_write,
	       rd((unsigned long)__va(DATA_PAGE(0)) + 4));

	/* Changing the PTE without telling the Host: the shadow is stale. */
	pte_set(up, DATA_PAGE(1) | U_FLAGS);
	stale = rd(UVA);
	/* SET_PTE of an entry with neither Accessed nor Dirty: the shadow
	 * entry is dropped and faulted in again on the next touch. */
	set_pte_at(pgdir, up, UVA, DATA_PAGE(1) | U_FLAGS);
	printk("step=set_pte_clean\n");
	v = rd(UVA);
	printk("stale=%x remapped=%x pte_remapped=%x\n", stale, v, (unsigned)pte_get(up));

	/* Accessed|Dirty (and Global, which the Host drops): installed at once,
	 * writable. */
	set_pte_at(pgdir, up, UVA, DATA_PAGE(2) | U_FLAGS | _PAGE_ACCESSED | _PAGE_DIRTY | 0x100);
	printk("step=set_pte_dirty\n");
	wr(UVA + 8, 0x2222);
	printk("dirty_read=%x dirty_write=%x\n", rd(UVA),
	       rd((unsigned long)__va(DATA_PAGE(2)) + 8));

	/* Accessed only: installed read-only, so the first write still comes
	 * to the Host, which sets Dirty. */
	set_pte_at(pgdir, up, UVA, DATA_PAGE(0) | U_FLAGS | _PAGE_ACCESSED);
	printk("step=set_pte_accessed\n");
	v = rd(UVA + 4);
	wr(UVA + 8, 0x3333);
	printk("acc_read=%x acc_pte=%x acc_write=%x\n", v, (unsigned)pte_get(up),
	       rd((unsigned long)__va(DATA_PAGE(0)) + 8));
	return 0;
}
