/* The Launcher's console test Guest (tests/test_launcher_run.py): it lists
 * the devices it finds, then echoes console input line by line and obeys a
 * few commands: quit, die, unbind, initrd, baddma, nokey. */
#include "ln_lib.h"

/* For the bzImage test: four "mov 0xC0......, %eax" right after the entry
 * code, so 2.6.23's page-offset guess (the byte 4 after an A1) finds 0xC0
 * before anything else. */
__asm__(".section .text.head, \"ax\"\n"
	".byte 0xA1\n.long 0xC0000000\n.byte 0xA1\n.long 0xC0000000\n"
	".byte 0xA1\n.long 0xC0000000\n.byte 0xA1\n.long 0xC0000000\n"
	".text\n");

static void command(const char *cmd)
{
	static struct lguest_dma bad;

	if (!strcmp(cmd, "quit")) {
		printk("ln: bye\n");
		lguest_crash("Power down");
	} else if (!strcmp(cmd, "die")) {
		lguest_crash("ln was told to die");
	} else if (!strcmp(cmd, "unbind")) {
		hcall(LHCALL_BIND_DMA, LGUEST_CONSOLE_DMA_KEY, __pa(&ln_in_dma), 0);
		printk("ln: unbound\n");
		sleep_ms(700);
		ln_bind_console();
		printk("ln: rebound\n");
	} else if (!strcmp(cmd, "initrd")) {
		const u8 *p = __va(bp_u32(0x218));

		printk("ln: initrd type %x at %x size %x first [%c%c%c%c%c%c]\n",
		       bp_u32(0x210) & 0xFF, bp_u32(0x218), bp_u32(0x21C),
		       p[0], p[1], p[2], p[3], p[4], p[5]);
	} else if (!strcmp(cmd, "baddma")) {
		bad.used_len = 0;
		bad.addr[0] = 0xFFFFF000;
		bad.len[0] = 16;
		bad.len[1] = 0;
		send_dma(LGUEST_CONSOLE_DMA_KEY, &bad);
		printk("ln: still here after baddma\n");
	} else if (!strcmp(cmd, "nokey")) {
		bad.used_len = 0;
		bad.addr[0] = __pa(ln_line);
		bad.len[0] = 4;
		bad.len[1] = 0;
		send_dma(0x1000, &bad);
		printk("ln: nokey used_len %u\n", (unsigned)bad.used_len);
	} else {
		printk("ln: got [%s]\n", cmd);
	}
}

int main(void)
{
	struct lguest_device_desc *d;

	lguest_init();
	ln_setup_irqs();
	printk("ln: hello, cmdline [%s]\n", boot_cmdline());
	d = map_devices();
	printk("ln: mem %x\n", (unsigned)ram_size());
	for (int i = 0; i < LGUEST_MAX_DEVICES; i++)
		if (d[i].type)
			printk("ln: dev %d type %u features %x pages %u pfn %x\n", i,
			       d[i].type, d[i].features, d[i].num_pages, (unsigned)d[i].pfn);
	if (ln_console_setup(d, ln_console_irq) < 0)
		lguest_crash("ln: no console");
	printk("ln: ready\n");

	for (;;) {
		char chunk[sizeof(ln_inbuf)];
		unsigned n;

		wait_for(&ln_got);
		ln_got = 0;
		n = ln_take_input(chunk);
		for (unsigned i = 0; i < n; i++) {
			const char *line;

			if (chunk[i] == 3)
				printk("ln: ctrl-c\n");
			else if ((line = ln_line_feed(chunk[i])))
				command(line);
		}
	}
}
