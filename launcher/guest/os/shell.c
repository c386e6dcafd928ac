#include "os.h"

/*G:470 The shell.  The Launcher puts its terminal in raw mode without echo,
 * as 2.6.23's did, so everything a terminal driver would do is ours: echo
 * what is typed, rub out a character on Backspace or DEL, end the line on
 * CR or LF (a CR LF pair counts once), throw the line away on ^U or ^C, and
 * skip the escape sequences arrow keys send.  Echo is collected and sent as
 * one console write, so a pasted line costs one trip to the Launcher, not
 * one per character. */
#define PROMPT "lguest$ "
#define MAX_ARGS 8

static char line[256];
static unsigned line_len;
static int last_cr, esc_state;
static char echo_buf[256];
static unsigned echo_len;
static u8 sector_buf[SECTOR_SIZE] __attribute__((aligned(SECTOR_SIZE)));
static u8 pattern_buf[SECTOR_SIZE] __attribute__((aligned(SECTOR_SIZE)));

static void echo_flush(void)
{
	if (echo_len)
		console_write(echo_buf, echo_len);
	echo_len = 0;
}

static void echo(const char *s)
{
	while (*s) {
		if (echo_len == sizeof(echo_buf))
			echo_flush();
		echo_buf[echo_len++] = *s++;
	}
}
/*:*/

static void run_command(char *cmd);

static void shell_char(int c)
{
	char s[2] = { (char)c, 0 };

	if (esc_state) {		/* ESC [ ... final byte */
		if (esc_state == 1 && c == '[')
			esc_state = 2;
		else if (esc_state == 1 || (c >= 0x40 && c <= 0x7E))
			esc_state = 0;
		return;
	}
	if (c == '\n' && last_cr) {
		last_cr = 0;
		return;
	}
	last_cr = c == '\r';
	if (c == '\r' || c == '\n') {
		echo("\n");
		echo_flush();
		line[line_len] = 0;
		run_command(line);
		line_len = 0;
		echo(PROMPT);
	} else if (c == 0x7F || c == '\b') {
		if (line_len) {
			line_len--;
			echo("\b \b");
		}
	} else if (c == 3) {		/* ^C */
		echo("^C\n" PROMPT);
		line_len = 0;
	} else if (c == 0x15) {		/* ^U */
		for (; line_len; line_len--)
			echo("\b \b");
	} else if (c == 0x1B) {
		esc_state = 1;
	} else if (c >= 0x20 && c < 0x7F && line_len < sizeof(line) - 1) {
		line[line_len++] = c;
		echo(s);
	}
}

/*G:480 The shell's main loop is the OS's idle loop as well: handle every
 * received frame and every typed character, and when there is nothing left,
 * HALT until an interrupt brings more (a key, a frame, or the timer if the
 * network stack has a deadline).
 * Interrupts are disabled between the last look and the HALT, so nothing
 * that arrives in between can be missed: the Host wakes us for it at once. */
void shell_run(void)
{
	echo(PROMPT);
	echo_flush();
	prompt_tsc = rdtsc();
	for (;;) {
		int c;

		net_poll();
		while ((c = console_getc()) >= 0)
			shell_char(c);
		echo_flush();
		local_irq_disable();
		if (!console_pending() && !net_rx_pending())
			idle(net_timer_ms());
		else
			local_irq_enable();
	}
}
/*:*/

static void cmd_help(void)
{
	printk("Commands:\n"
	       "  help                          this list\n"
	       "  info                          memory, devices, guest id, clock, command line\n"
	       "  uptime                        time since boot\n"
	       "  blk [DEV] read N              show sector N of the disk (lgba unless DEV)\n"
	       "  blk [DEV] write N PATTERN     fill sector N with PATTERN repeated\n"
	       "  blk [DEV] verify N PATTERN    check that sector N holds PATTERN repeated\n"
	       "  net                           interfaces, peers and the ARP cache\n"
	       "  ping A.B.C.D [COUNT [MS]]     ICMP echo, COUNT (4) requests every MS (1000) ms\n"
	       "  bench                         hypercall, DMA and interrupt micro-benchmarks\n"
	       "  poweroff                      switch the Guest off\n");
}

static void cmd_info(void)
{
	unsigned i, n = 0;

	printk("memory: %lu KB (%lu MB), %lu MB in the linear map\n", mem_size >> 10,
	       mem_size / MB, lowmem_size / MB);
	printk("guest id: %u\n", lguest_data.guestid);
	printk("tsc_khz: %lu (clock: %s)\n", lguest_data.tsc_khz, clock_name());
	if (hz)
		printk("timer: %u Hz\n", hz);
	else
		printk("timer: tickless\n");
	printk("command line: %s\n", command_line);
	if (lguest_data.tsc_khz) {
		u64 banner = cycles_to_ns(banner_tsc - boot_tsc);
		u64 prompt = cycles_to_ns(prompt_tsc - boot_tsc);

		do_div(&banner, 1000);
		do_div(&prompt, 1000);
		printk("boot: banner after %lu us, prompt after %lu us\n",
		       (unsigned long)banner, (unsigned long)prompt);
	}
	for (i = 0; i < LGUEST_MAX_DEVICES; i++)
		n += lguest_devices[i].type != 0;
	printk("devices: %u (device page at 0x%lx)\n", n, lguest_devices_phys);
	for (i = 0; i < LGUEST_MAX_DEVICES; i++) {
		volatile struct lguest_device_desc *d = &lguest_devices[i];
		const struct lguest_device *dev = &lguest_devs[i];

		if (!d->type)
			continue;
		printk("  %u: %s type %u features 0x%04x status 0x%02x irq %u", i,
		       lguest_device_type_name(d->type), d->type, d->features, d->status,
		       lgdev_irq(dev));
		if (d->num_pages)
			printk(" pages %u at 0x%lx", d->num_pages, (unsigned long)d->pfn << 12);
		if (d->type == LGUEST_DEVICE_T_BLOCK)
			blk_describe(dev);
		else if (d->type == LGUEST_DEVICE_T_NET)
			net_describe(dev);
		else if (dev->name)
			printk(" %s", dev->name);
		printk("\n");
	}
}

static void cmd_uptime(void)
{
	unsigned long ms = clock_ms();

	printk("up %lu.%03lu s (clock: %s), %lu timer interrupts\n", ms / 1000, ms % 1000,
	       clock_name(), jiffies);
}

/*G:490 blk: one sector at a time through the block driver.  A pattern is any
 * word: "blk write 3 ab" fills sector 3 with "abab...", and "blk verify 3 ab"
 * reads it back and compares. */
static void fill_pattern(const char *pat)
{
	unsigned i, n = strlen(pat);

	for (i = 0; i < SECTOR_SIZE; i++)
		pattern_buf[i] = pat[i % n];
}

static int blk_report(struct blockdev *bd, int err, unsigned long sector)
{
	if (err == -2)
		printk("blk: sector %lu is past the end of %s (%u sectors)\n", sector,
		       blk_name(bd), blk_sectors(bd));
	else if (err)
		printk("blk: I/O error on %s sector %lu\n", blk_name(bd), sector);
	return err;
}

static void cmd_blk(int argc, char **argv)
{
	struct blockdev *bd;
	unsigned long sector;
	const char *op;
	unsigned i;

	if (argc > 1 && !strncmp(argv[1], "lgb", 3)) {
		bd = blk_find(argv[1]);
		argv++, argc--;
		if (!bd) {
			printk("blk: no device %s\n", argv[0]);
			return;
		}
	} else {
		bd = blk_find(0);
	}
	if (!bd) {
		printk("blk: no block device\n");
		return;
	}
	op = argc > 1 ? argv[1] : "";
	if (argc < 3 || !parse_uint(argv[2], &sector) ||
	    (!strcmp(op, "read") ? argc != 3 :
	     (strcmp(op, "write") && strcmp(op, "verify")) || argc != 4)) {
		printk("%s: %u sectors (%u KB)\n", blk_name(bd), blk_sectors(bd),
		       blk_sectors(bd) / 2);
		printk("usage: blk [DEV] read N | write N PATTERN | verify N PATTERN\n");
		return;
	}
	if (!strcmp(op, "write")) {
		fill_pattern(argv[3]);
		if (!blk_report(bd, blk_rw(bd, 1, sector, pattern_buf, SECTOR_SIZE), sector))
			printk("%s: wrote sector %lu\n", blk_name(bd), sector);
		return;
	}
	if (blk_report(bd, blk_rw(bd, 0, sector, sector_buf, SECTOR_SIZE), sector))
		return;
	if (!strcmp(op, "read")) {
		printk("%s: sector %lu\n", blk_name(bd), sector);
		hexdump(sector_buf, SECTOR_SIZE);
		return;
	}
	fill_pattern(argv[3]);
	for (i = 0; i < SECTOR_SIZE; i++) {
		if (sector_buf[i] != pattern_buf[i]) {
			printk("%s: sector %lu differs at byte %u: 0x%02x, not 0x%02x\n",
			       blk_name(bd), sector, i, sector_buf[i], pattern_buf[i]);
			return;
		}
	}
	printk("%s: sector %lu verified\n", blk_name(bd), sector);
}
/*:*/

static void cmd_ping(int argc, char **argv)
{
	unsigned long count = 4, interval = 1000;
	u32 ip;

	if (argc < 2 || argc > 4 || !parse_ip(argv[1], &ip) || strchr(argv[1], ':') ||
	    (argc > 2 && (!parse_uint(argv[2], &count) || !count)) ||
	    (argc > 3 && (!parse_uint(argv[3], &interval) || interval < 10))) {
		printk("usage: ping A.B.C.D [COUNT [INTERVAL_MS]]\n");
		return;
	}
	ping(ip, count, interval);
}

/*G:495 bench: what things cost, measured from inside the Guest with the TSC.
 * A hypercall is a trap to the Host and back; a hypercall through the async
 * ring is a few stores (the Host runs it at the next trap); a DMA to the
 * Launcher is a hypercall plus a trip out of read() and back; waking from
 * HALT by the timer is the Host's timer, its sleep and an interrupt
 * delivery.  The last line shows why this Guest counts its instructions: on
 * kvm-pvm each one is emulated. */
static void bench_line(const char *what, u64 cycles, unsigned ops)
{
	u64 per = cycles, ns;
	u32 rem;

	do_div(&per, ops);
	ns = cycles_to_ns(per);
	if (lguest_data.tsc_khz) {
		rem = do_div(&ns, 1000);
		printk("bench: %-36s %9lu cycles %7lu.%03u us  (%u)\n", what,
		       (unsigned long)per, (unsigned long)ns, rem, ops);
	} else {
		printk("bench: %-36s %9lu cycles  (%u)\n", what, (unsigned long)per, ops);
	}
}

static void cmd_bench(void)
{
	static struct lguest_dma empty;
	unsigned long flags;
	unsigned i, n;
	u64 t;

	printk("bench: tsc_khz %lu\n", lguest_data.tsc_khz);
	flags = local_irq_save();
	n = 200;
	t = rdtsc();
	for (i = 0; i < n; i++)
		hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	bench_line("hypercall round trip", rdtsc() - t, n);

	n = LHCALL_RING_SIZE;
	t = rdtsc();
	for (i = 0; i < n; i++)
		async_hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
	bench_line("async hypercall (ring, then flush)", rdtsc() - t, n);

	n = 50;
	t = rdtsc();
	for (i = 0; i < n; i++) {
		empty.len[0] = 0;
		lguest_send_dma(LGUEST_CONSOLE_DMA_KEY, &empty);
	}
	bench_line("SEND_DMA to the Launcher (empty)", rdtsc() - t, n);

	n = 10;
	t = rdtsc();
	for (i = 0; i < n; i++) {
		unsigned long j = jiffies;

		hcall(LHCALL_SET_CLOCKEVENT, 1000, 0, 0);
		while (jiffies == j) {
			local_irq_disable();
			if (jiffies == j)
				safe_halt();
		}
	}
	local_irq_disable();
	bench_line("timer IRQ wake-up from HALT (1 us)", rdtsc() - t, n);

	n = 50000;
	t = rdtsc();
	__asm__ __volatile__("1: decl %0; jnz 1b" : "+r"(n) : : "cc");
	n = 50000;
	bench_line("one guest instruction (dec; jnz loop)", rdtsc() - t, 2 * n);
	local_irq_restore(flags);
}
/*:*/

static void run_command(char *cmd)
{
	char *argv[MAX_ARGS];
	int argc = 0;

	while (*cmd) {
		while (*cmd == ' ')
			*cmd++ = 0;
		if (!*cmd)
			break;
		if (argc == MAX_ARGS) {
			printk("too many arguments\n");
			return;
		}
		argv[argc++] = cmd;
		while (*cmd && *cmd != ' ')
			cmd++;
	}
	if (!argc)
		return;
	if (!strcmp(argv[0], "help"))
		cmd_help();
	else if (!strcmp(argv[0], "info"))
		cmd_info();
	else if (!strcmp(argv[0], "uptime"))
		cmd_uptime();
	else if (!strcmp(argv[0], "blk"))
		cmd_blk(argc, argv);
	else if (!strcmp(argv[0], "net")) {
		inet_show();
		net_show();
	} else if (!strcmp(argv[0], "ping"))
		cmd_ping(argc, argv);
	else if (!strcmp(argv[0], "bench"))
		cmd_bench();
	else if (!strcmp(argv[0], "poweroff")) {
		printk("Power down.\n");
		poweroff();
	} else
		printk("%s: command not found (try help)\n", argv[0]);
}
