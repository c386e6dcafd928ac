/* The Launcher's "busy Guest" test (tests/test_launcher_run.py): it waits
 * for console input with the clock event armed every 3 ms, so keystrokes
 * (and the Waker's BREAK that brings them) arrive while it is running, not
 * only while it is halted.  Every line is echoed as "> LINE"; "quit" powers
 * off after saying how many lines it saw. */
#include "ln_lib.h"

static volatile unsigned wake;
static unsigned lines;

static void console_irq(struct trapframe *tf)
{
	(void)tf;
	ln_got = 1;
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

	lguest_init();
	install_trap(32, timer_irq, GATE_INTERRUPT, 0);
	lguest_data.blocked_interrupts = 0;
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	d = map_devices();
	ln_console_setup(d, console_irq);
	printk("ln: busy ready\n");
	for (;;) {
		char chunk[sizeof(ln_inbuf)];
		unsigned n;

		while (!ln_got) {
			wake = 0;
			hcall(LHCALL_SET_CLOCKEVENT, 3000000, 0, 0);
			wait_for(&wake);
		}
		ln_got = 0;
		n = ln_take_input(chunk);
		for (unsigned i = 0; i < n; i++) {
			const char *line = ln_line_feed(chunk[i]);

			if (!line)
				continue;
			lines++;
			if (!strcmp(line, "quit")) {
				printk("ln: %u lines\n", lines);
				return 0;
			}
			printk("> %s\n", line);
		}
	}
}
