/* The Launcher's "busy Guest" test (tests/test_launcher_run.py): it waits
 * for console input with the clock event armed every 3 ms, so keystrokes
 * (and the Waker's BREAK that brings them) arrive while it is running, not
 * only while it is halted.  Every line is echoed as "> LINE"; "quit" powers
 * off after saying how many lines it saw. */
#include "ln_lib.h"

static char inbuf[256];
static struct lguest_dma in_dma;
static volatile unsigned got, wake;
static char line[256];
static unsigned nline, lines;

static void console_irq(struct trapframe *tf)
{
	(void)tf;
	got = 1;
	wake = 1;
}

static void timer_irq(struct trapframe *tf)
{
	(void)tf;
	wake = 1;
}

int main(void)
{
	struct lguest_device_desc *d;
	int con;

	lguest_init();
	install_trap(32, timer_irq, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	d = map_devices();
	con = find_device(d, LGUEST_DEVICE_T_CONSOLE);
	install_trap(32 + con + 1, console_irq, GATE_INTERRUPT, 0);
	in_dma.addr[0] = __pa(inbuf);
	in_dma.len[0] = sizeof(inbuf);
	bind_dma(LGUEST_CONSOLE_DMA_KEY, &in_dma, 1, con + 1);
	printk("ln: busy ready\n");
	for (;;) {
		char chunk[sizeof(inbuf)];
		unsigned n;

		while (!got) {
			wake = 0;
			hcall(LHCALL_SET_CLOCKEVENT, 3000000, 0, 0);
			wait_for(&wake);
		}
		got = 0;
		n = in_dma.used_len;
		if (n > sizeof(inbuf))
			n = sizeof(inbuf);
		memcpy(chunk, inbuf, n);
		in_dma.used_len = 0;
		for (unsigned i = 0; i < n; i++) {
			if (chunk[i] == '\n') {
				line[nline] = 0;
				nline = 0;
				lines++;
				if (!strcmp(line, "quit")) {
					printk("ln: %u lines\n", lines);
					return 0;
				}
				printk("> %s\n", line);
			} else if (nline < sizeof(line) - 1) {
				line[nline++] = chunk[i];
			}
		}
	}
}
