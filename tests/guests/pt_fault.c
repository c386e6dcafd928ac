/* Page faults that are the Guest's own: the Host must reflect them, with the
 * faulting address in lguest_data.cr2 and the CPU's error code, and the
 * Guest's handler steps over the faulting instruction and carries on.
 * Each line is "name=cr2/err/count/value". */
#include "pt_lib.h"

static pte_t pgdir[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t kptes[1024] __attribute__((aligned(PAGE_SIZE)));
static pte_t uptes[1024] __attribute__((aligned(PAGE_SIZE)));

static volatile unsigned long pf_count, pf_cr2, pf_err;

static void pf(struct trapframe *tf)
{
	pf_count++;
	pf_cr2 = lguest_data.cr2;
	pf_err = tf->errcode;
	tf->eip += 2;		/* the probe's load or store */
}

static void report(const char *name, u32 v)
{
	printk("%s=%x/%x/%x/%x\n", name, (unsigned)pf_cr2, (unsigned)pf_err,
	       (unsigned)pf_count, v);
	pf_count = pf_cr2 = pf_err = 0;
}

#define RO_VA	(UVA + 0x1000)		/* present, no RW */
#define RO2_VA	(UVA + 0x2000)		/* present, no RW, written first */
#define NP_VA	(UVA + 0x3000)		/* not present in a present PTE page */
#define NOPGD_VA 0x00800000UL		/* PGD entry not present */

int main(void)
{
	lguest_init();
	install_trap(14, pf, GATE_INTERRUPT, 0);
	wr((unsigned long)__va(DATA_PAGE(0)), 0x0D0D0D0D);
	wr((unsigned long)__va(DATA_PAGE(1)), 0x1E1E1E1E);

	map_linear(pgdir, kptes);
	pte_set(&uptes[PTE_INDEX(UVA)], DATA_PAGE(0) | 0x7);
	pte_set(&uptes[PTE_INDEX(RO_VA)], DATA_PAGE(1) | _PAGE_PRESENT | _PAGE_USER);
	pte_set(&uptes[PTE_INDEX(RO2_VA)], DATA_PAGE(1) | _PAGE_PRESENT | _PAGE_USER);
	pte_set(&pgdir[PGD_INDEX(UVA)], __pa(uptes) | _PAGE_TABLE);
	new_pgtable(pgdir);

	report("ok_read", probe_read(UVA));
	report("nopgd_read", probe_read(NOPGD_VA));
	probe_write(NOPGD_VA + 0x10, 1);
	report("nopgd_write", 0);
	report("np_read", probe_read(NP_VA + 0x20));
	probe_write(NP_VA, 1);
	report("np_write", 0);
	/* Read first: the shadow entry is then present and read-only, and the
	 * write faults with present|write. */
	report("ro_read", probe_read(RO_VA));
	probe_write(RO_VA + 0xC, 0x5A5A);
	report("ro_write", rd((unsigned long)__va(DATA_PAGE(1)) + 0xC));
	printk("ro_pte=%x\n", (unsigned)pte_get(&uptes[PTE_INDEX(RO_VA)]));
	/* Written first: there is no shadow entry yet, so the CPU says "not
	 * present", and 2.6.23 reflects the shadow's error code as it is. */
	probe_write(RO2_VA + 4, 0x5A5A);
	report("ro2_write", pte_get(&uptes[PTE_INDEX(RO2_VA)]));
	/* Nothing of the Host shows at the Switcher's old address. */
	report("switcher_read", probe_read(0xFFC00000UL));
	/* And the Guest's own mapping still works after all that. */
	probe_write(UVA + 0x10, 0x600D);
	report("ok_write", rd(UVA + 0x10));
	return 0;
}
