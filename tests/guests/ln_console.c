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

static char inbuf[256];
static struct lguest_dma in_dma;
static volatile unsigned got;
static char line[256];
static unsigned nline;
static int con_irq;

static void console_irq(struct trapframe *tf)
{
	(void)tf;
	got = 1;
}

static void bind_console(void)
{
	in_dma.used_len = 0;
	in_dma.addr[0] = __pa(inbuf);
	in_dma.len[0] = sizeof(inbuf);
	in_dma.len[1] = 0;
	bind_dma(LGUEST_CONSOLE_DMA_KEY, &in_dma, 1, con_irq);
}

static void command(const char *cmd)
{
	static struct lguest_dma bad;

	if (!strcmp(cmd, "quit")) {
		printk("ln: bye\n");
		lguest_crash("Power down");
	} else if (!strcmp(cmd, "die")) {
		lguest_crash("ln was told to die");
	} else if (!strcmp(cmd, "unbind")) {
		hcall(LHCALL_BIND_DMA, LGUEST_CONSOLE_DMA_KEY, __pa(&in_dma), 0);
		printk("ln: unbound\n");
		sleep_ms(700);
		bind_console();
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
		bad.addr[0] = __pa(line);
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
	int con;

	lguest_init();
	ln_setup_irqs();
	printk("ln: hello, cmdline [%s]\n", boot_cmdline());
	d = map_devices();
	printk("ln: mem %x\n", (unsigned)ram_size());
	for (int i = 0; i < LGUEST_MAX_DEVICES; i++)
		if (d[i].type)
			printk("ln: dev %d type %u features %x pages %u pfn %x\n", i,
			       d[i].type, d[i].features, d[i].num_pages, (unsigned)d[i].pfn);
	con = find_device(d, LGUEST_DEVICE_T_CONSOLE);
	if (con < 0)
		lguest_crash("ln: no console");
	con_irq = con + 1;
	install_trap(32 + con_irq, console_irq, GATE_INTERRUPT, 0);
	bind_console();
	printk("ln: ready\n");

	for (;;) {
		char chunk[sizeof(inbuf)];
		unsigned n;

		wait_for(&got);
		got = 0;
		/* Take the input and free the buffer at once: the Launcher may
		 * fill it again while we work on this chunk. */
		n = in_dma.used_len;
		if (n > sizeof(inbuf))
			n = sizeof(inbuf);
		memcpy(chunk, inbuf, n);
		in_dma.used_len = 0;
		for (unsigned i = 0; i < n; i++) {
			char c = chunk[i];

			if (c == 3) {
				printk("ln: ctrl-c\n");
			} else if (c == '\n' || c == '\r') {
				line[nline] = 0;
				nline = 0;
				command(line);
			} else if (nline < sizeof(line) - 1) {
				line[nline++] = c;
			}
		}
	}
}
