/* Five page directories, more than the Host's four cached shadows: each maps
 * the same kernel PTE page and its own page at UVA.  Switching among them in
 * a fixed order, each must see its own page every time, and a SET_PTE made
 * for one page directory (or for the kernel, which is all of them) while
 * another runs must be seen when we come back. */
#include "pt_lib.h"

#define NPGD	5

static pte_t pgdirs[NPGD][1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t uptes[NPGD][1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t kptes[1024] __attribute__((aligned(PAGE_SIZE)));

#define KVA	(PAGE_OFFSET + 0x390000UL)	/* a linear-map page nobody uses */

static const unsigned char order[] = {
	0, 1, 2, 3, 4, 0, 2, 4, 1, 3, 3, 4, 0, 1, 2, 4, 2, 0, 3, 1,
};

int main(void)
{
	unsigned i, bad = 0;

	lguest_init();
	map_linear(pgdirs[0], kptes);
	for (i = 0; i < NPGD; i++) {
		wr((unsigned long)__va(DATA_PAGE(i)), 0x100 + i);
		uptes[i][0] = DATA_PAGE(i) | 0x7;
		pgdirs[i][PGD_INDEX(PAGE_OFFSET)] = pgdirs[0][PGD_INDEX(PAGE_OFFSET)];
		pgdirs[i][PGD_INDEX(UVA)] = __pa(uptes[i]) | _PAGE_TABLE;
	}

	/* Each visit reads the page's tag and counts the visit in the page. */
	for (i = 0; i < sizeof(order); i++) {
		unsigned p = order[i];
		u32 tag;

		new_pgtable(pgdirs[p]);
		tag = rd(UVA);
		wr(UVA + 4, rd(UVA + 4) + 1);
		printk("%u", tag - 0x100);
		if (tag != 0x100 + p)
			bad++;
	}
	printk(" bad=%u\n", bad);
	printk("visits=");
	for (i = 0; i < NPGD; i++)
		printk("%u", rd((unsigned long)__va(DATA_PAGE(i)) + 4));
	printk("\n");

	/* A user SET_PTE for page directory 1 made while 0 runs. */
	new_pgtable(pgdirs[1]);
	rd(UVA);
	new_pgtable(pgdirs[0]);
	wr((unsigned long)__va(DATA_PAGE(7)), 0x77777777);
	set_pte_at(pgdirs[1], &uptes[1][0], UVA, DATA_PAGE(7) | 0x7 | _PAGE_ACCESSED);
	printk("own=%x ", rd(UVA));
	new_pgtable(pgdirs[1]);
	printk("other=%x\n", rd(UVA));

	/* A kernel SET_PTE: every cached shadow sees it. */
	wr(KVA, 0x39393939);
	wr((unsigned long)__va(DATA_PAGE(8)), 0x88888888);
	for (i = 0; i < NPGD; i++) {
		new_pgtable(pgdirs[i]);
		rd(KVA);
	}
	set_pte_at(pgdirs[NPGD - 1], &kptes[PTE_INDEX(KVA)], KVA, DATA_PAGE(8) | _PAGE_KERNEL);
	printk("kernel=");
	for (i = 0; i < NPGD; i++) {
		new_pgtable(pgdirs[i]);
		printk("%x,", rd(KVA));
	}
	printk("\n");
	return 0;
}
