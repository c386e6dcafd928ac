/*G:200 The bundled Guest OS.  Every Guest before this one in the tour was a
 * test: a few lines that poke the Host and die.  This one is a small kernel
 * that boots the way a 2.6.23 Linux Guest booted and drives the Launcher's
 * devices exactly the way 2.6.23's Guest drivers did, so that running
 * "lguest 64" gives a prompt to type at, a disk to read and write, and a
 * network interface that answers ping.
 *
 * It is some two thousand lines of C in launcher/guest/os/, linked with the
 * same runtime as the test Guests (head.S, rt.c, traps.S).  The journey
 * through it follows the boot: the boot parameters and the memory map
 * (here), page tables of its own (mm.c), interrupts and the clock (irq.c),
 * the lguest bus (bus.c) and its drivers (console.c, block.c, net.c), a
 * small IPv4 stack (inet.c) and the shell (shell.c). :*/
#include "os.h"

char command_line[COMMAND_LINE_SIZE];
unsigned long mem_size;
u64 banner_tsc, prompt_tsc;		/* for "info": how long booting took */

/*G:210 The first thing any lguest Guest does is introduce itself to the
 * Host with LGUEST_INIT; lguest_init() in the runtime does that, after
 * telling the Host where our iret sequence lives.
 *
 * Then the boot parameters, which the Launcher left in the "zero page" at
 * physical address 0.  Linux copies the command line before anything can
 * overwrite it, and so do we.  The amount of memory comes from the e820 map
 * at offset 0x2D0: a count of entries at 0x1E8, then 20-byte entries of
 * {u64 address, u64 size, u32 type}.  The top of the highest RAM entry is
 * what Linux calls max_pfn << PAGE_SHIFT, and it matters twice: it is how
 * much memory we have, and the lguest bus looks for its device page right
 * there, at the end of RAM. */
static unsigned long e820_top_of_ram(void)
{
	const u8 *bp = boot_params;
	unsigned n = bp[0x1E8], i;
	unsigned long top = 0;

	if (n > 128)
		n = 128;
	for (i = 0; i < n; i++) {
		const u32 *e = (const u32 *)(bp + 0x2D0 + 20 * i);
		u64 end = ((u64)e[1] << 32 | e[0]) + ((u64)e[3] << 32 | e[2]);

		if (e[4] != 1 || end > 0xFFFFF000ULL)
			continue;	/* not RAM, or past what 32 bits reach */
		if ((unsigned long)end > top)
			top = (unsigned long)end;
	}
	return top & PAGE_MASK;
}

static void setup_arch(void)
{
	strncpy_z(command_line, boot_cmdline(), sizeof(command_line));
	mem_size = e820_top_of_ram();
	if (!mem_size)
		panic("no RAM in the e820 map");
}
/*:*/

/* The value of "name=value" on the command line, as a pointer into a small
 * static copy (the next call overwrites it); 0 when the option is absent. */
const char *cmdline_option(const char *name)
{
	static char value[64];
	size_t n = strlen(name);
	const char *p = command_line;

	while (*p) {
		while (*p == ' ')
			p++;
		if (!strncmp(p, name, n) && p[n] == '=') {
			unsigned i = 0;

			for (p += n + 1; *p && *p != ' ' && i < sizeof(value) - 1; p++)
				value[i++] = *p;
			value[i] = 0;
			return value;
		}
		while (*p && *p != ' ')
			p++;
	}
	return 0;
}

void panic(const char *fmt, ...)
{
	static char msg[128];
	__builtin_va_list ap;

	local_irq_disable();
	printk("Kernel panic: ");
	__builtin_va_start(ap, fmt);
	vprintk(fmt, ap);
	__builtin_va_end(ap);
	printk("\n");
	strncpy_z(msg, fmt, sizeof(msg));
	lguest_crash(msg);
}

/*G:290 Switching off.  A Guest has no power button: 2.6.23 set
 * pm_power_off to a CRASH hypercall with the message "Power down", and the
 * Launcher prints the Host's death message, "CRASH: Power down", and exits. */
void poweroff(void)
{
	local_irq_disable();
	hcall(LHCALL_SET_CLOCKEVENT, 0, 0, 0);
	lguest_crash("Power down");
}
/*:*/

/*G:220 main() is start_kernel() in miniature.  The order is chosen so the
 * first line reaches the console as early as possible: page tables for the
 * kernel and the device page first, then one look at the device page to
 * count the devices, then the banner.  Everything slow (the rest of the
 * linear map, the drivers' probes, the timer) comes after it.
 *
 * Interrupts stay off (irq_enabled is 0 in .bss) until the drivers have
 * bound their buffers and set up their handlers; from then on the shell
 * runs with them on and sleeps in HALT whenever it has nothing to do. */
int main(void)
{
	unsigned ndev;

	boot_tsc = rdtsc();
	lguest_init();
	setup_arch();
	paging_init();
	ndev = lguest_bus_init();
	printk("lguest-kvm Guest OS: %lu MB, %u device%s\n",
	       mem_size / MB, ndev, ndev == 1 ? "" : "s");
	banner_tsc = rdtsc();
	trap_init();
	time_init();
	paging_init_late();
	lguest_bus_probe();
	inet_init();
	local_irq_enable();
	shell_run();
}
/*:*/
