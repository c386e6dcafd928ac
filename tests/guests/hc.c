/* Hypercall scenarios, one per MODE (built with -DMODE=n by tests/test_hypercalls.py). */
#include "lguest.h"

#include "checkpoint.h"

static __attribute__((unused)) char crashmsg[200];

static __attribute__((unused)) void ud(struct trapframe *tf)
{
	printk("ud at %x\n", tf->eip);
	tf->eip += 2;
}

int main(void)
{
	__attribute__((unused)) unsigned long r;

#if MODE == 1	/* a hypercall before LGUEST_INIT */
	hcall(LHCALL_FLUSH_TLB, 1, 0, 0);
#elif MODE == 2	/* LGUEST_INIT twice */
	lguest_init();
	hcall(LHCALL_LGUEST_INIT, __pa(&lguest_data), 0, 0);
#elif MODE == 3	/* what LGUEST_INIT tells the Guest */
	lguest_init();
	printk("reserve_mem=%x guestid=%u tsc_khz=%u time=%u.%u\n",
	       (unsigned)lguest_data.reserve_mem, (unsigned)lguest_data.guestid,
	       (unsigned)lguest_data.tsc_khz, (unsigned)lguest_data.time.tv_sec,
	       (unsigned)lguest_data.time.tv_nsec);
#elif MODE == 4	/* LGUEST_INIT with lguest_data outside pfn_limit */
	hcall(LHCALL_LGUEST_INIT, 0x7ff000, 0, 0);
#elif MODE == 5	/* CRASH reads exactly 128 bytes and ends the message at byte 127 */
	lguest_init();
	memset(crashmsg, 'x', sizeof(crashmsg));
	hcall(LHCALL_CRASH, __pa(crashmsg), 0, 0);
#elif MODE == 6	/* CRASH from a bad address */
	lguest_init();
	hcall(LHCALL_CRASH, 0x7fffff0, 0, 0);
#elif MODE == 7	/* hypercall 11 was removed in 2.6.23 */
	lguest_init();
	hcall(11, 0, 0, 0);
#elif MODE == 8	/* an unknown hypercall; and eax comes back unchanged from the others */
	lguest_init();
	r = hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	printk("flush_async eax=%u\n", (unsigned)r);
	r = hcall(LHCALL_TS, 0, 0, 0);
	printk("ts eax=%u\n", (unsigned)r);
	hcall(99, 0, 0, 0);
#elif MODE == 9	/* LOAD_IDT_ENTRY: stored, ignored and refused entries */
	lguest_init();
	hcall(LHCALL_LOAD_IDT_ENTRY, 3, 0x00101234, 0xC010FFFF);
	hcall(LHCALL_LOAD_IDT_ENTRY, 8, 0x00601234, 0xC0108E00);
	hcall(LHCALL_LOAD_IDT_ENTRY, 2, 0x00601234, 0xC0108E00);
	hcall(LHCALL_LOAD_IDT_ENTRY, 0x80, 0x00601111, 0xC010EF00);
	hcall(LHCALL_LOAD_IDT_ENTRY, 70, 0x00601111, 0xC0108E00);
	hcall(LHCALL_LOAD_IDT_ENTRY, 4, 0x00601111, 0xC0108E00);
	hcall(LHCALL_LOAD_IDT_ENTRY, 4, 0x00601111, 0xC0100E00);	/* not present: zeroed */
	checkpoint(9);
	hcall(LHCALL_LOAD_IDT_ENTRY, 5, 0x00601111, 0xC0108500);	/* type 5: a task gate */
#elif MODE == 10	/* TS and SET_STACK are recorded */
	lguest_init();
	hcall(LHCALL_TS, 8, 0, 0);
	hcall(LHCALL_SET_STACK, 0x69, 0xC0200000, 2);
	checkpoint(10);
	hcall(LHCALL_TS, 0, 0, 0);
	checkpoint(11);
#elif MODE == 11	/* SEND_DMA to a private key returns {dma, key} from read() */
	lguest_init();
	static struct lguest_dma d;
	static char buf[] = "dma payload";
	d.used_len = 0;
	d.addr[0] = __pa(buf);
	d.len[0] = sizeof(buf) - 1;
	d.len[1] = 0;
	hcall(LHCALL_SEND_DMA, 0x3000, __pa(&d), 0);
	printk("used_len=%u\n", (unsigned)d.used_len);
	hcall(LHCALL_SEND_DMA, 0x3002, __pa(&d), 0);	/* unaligned key */
#elif MODE == 12	/* a key outside the Launcher's memory */
	lguest_init();
	hcall(LHCALL_SEND_DMA, 0x40000000, 0, 0);
#elif MODE == 13	/* the async ring: drained on the next exit, in order, stopping at a SEND_DMA */
	lguest_init();
	static const unsigned long calls[][4] = {
		{ LHCALL_LOAD_IDT_ENTRY, 40, 0x00601111, 0xC0108E00 },
		{ LHCALL_SEND_DMA, CHECKPOINT_KEY, 0, 0 },
		{ LHCALL_TS, 8, 0, 0 },
	};
	cp_dma.addr[0] = 13;
	for (unsigned i = 0; i < 3; i++) {
		unsigned long *h = &lguest_data.hcalls[i].eax;
		h[0] = calls[i][0];
		h[1] = calls[i][1];
		h[2] = i == 1 ? __pa(&cp_dma) : calls[i][2];
		h[3] = calls[i][3];
		wmb();
		lguest_data.hcall_status[i] = 0;
	}
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	printk("status %x %x %x %x\n", lguest_data.hcall_status[0], lguest_data.hcall_status[1],
	       lguest_data.hcall_status[2], lguest_data.hcall_status[3]);
	/* a wrapped ring: the Host's cursor is at 3, and slot 63 is never reached first */
	lguest_data.hcalls[63].eax = 99;
	lguest_data.hcall_status[63] = 0;
	lguest_data.hcalls[3].eax = LHCALL_TS;
	lguest_data.hcalls[3].edx = 0;
	lguest_data.hcall_status[3] = 0;
	checkpoint(14);
#elif MODE == 14	/* a trap the Guest has no handler for */
	lguest_init();
	__asm__ volatile("ud2");
#elif MODE == 15	/* IN and OUT from the Guest kernel (2.6.23's emulate_insn) */
	lguest_init();
	unsigned a = 0x12345678, b = 0x12345678, c = 0x12345678, d2 = 0x12345678;
	__asm__ volatile("inb $0x60, %%al" : "+a"(a));
	__asm__ volatile("inw $0x60, %%ax" : "+a"(b));
	__asm__ volatile("inl %%dx, %%eax" : "+a"(c) : "d"(0x80));
	__asm__ volatile("outb %%al, $0x80; outl %%eax, %%dx" : "+a"(d2) : "d"(0x70));
	printk("in: %x %x %x out left eax %x\n", a, b, c, d2);
	install_trap(6, ud, GATE_TRAP, 0);
	__asm__ volatile("ud2");
#endif
	return 0;
}
