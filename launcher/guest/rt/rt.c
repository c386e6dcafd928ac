/* The Guest runtime: from head.S to main(), the hypercalls every Guest
 * needs first, the console, and the few library routines gcc expects. */
#include "lguest.h"

struct lguest_data lguest_data __attribute__((aligned(4)));
void *boot_params;

/*G:020 head.S has given us a stack and cleared .bss; guest_start() does
 * the rest of the preparation a test Guest should not have to think about.
 *
 * The hypercall ring in lguest_data must start out empty, which means every
 * status byte 0xFF ("done"), not the 0 that .bss gives us: a zero would tell
 * the Host that 64 calls of garbage are waiting.  Then we remember where the
 * boot parameters are and run the Guest's own main().  Notice that we do
 * not call LGUEST_INIT here: that is left to main() (through lguest_init()),
 * so that tests can also see what the Host does to a Guest that forgets.
 *
 * Returning from main() means "switch me off".  A Guest has no power
 * button: it asks the Host to end it with the CRASH hypercall, and the
 * message "Power down" is what 2.6.23's Guest said. */
void guest_start(void *boot)
{
	memset(lguest_data.hcall_status, 0xFF, sizeof(lguest_data.hcall_status));
	boot_params = boot;
	main();
	lguest_crash("Power down");
}
/*:*/

/* The command line the Launcher stored (boot params field 0x228). */
const char *boot_cmdline(void)
{
	u32 ptr = *(u32 *)((char *)boot_params + 0x228);

	return ptr ? (const char *)__va(ptr) : "";
}

/*G:050 The first hypercall a Guest makes must be LGUEST_INIT, handing the
 * Host the physical address of lguest_data; any other call first is fatal.
 * The Host reads the noirq window (see lguest_iret) only at this moment, so
 * we fill it in beforehand, and it answers by writing reserve_mem, guestid,
 * tsc_khz and the time into the structure.  From here on interrupts can
 * arrive, as soon as irq_enabled says so. */
void lguest_init(void)
{
	lguest_data.noirq_start = (unsigned long)lguest_noirq_start;
	lguest_data.noirq_end = (unsigned long)lguest_noirq_end;
	hcall(LHCALL_LGUEST_INIT, __pa(&lguest_data), 0, 0);
}
/*:*/

/*G:080 Dying is also a hypercall.  CRASH takes the physical address of a
 * message; the Host copies up to 128 bytes of it as the reason the Guest
 * died, which the Launcher prints.  The Host never runs a crashed Guest
 * again, so the loop only matters if something is badly wrong. */
void lguest_crash(const char *msg)
{
	for (;;)
		hcall(LHCALL_CRASH, __pa(msg), 0, 0);
}
/*:*/

/*G:060 A Guest has no screen and no serial port; its console is a DMA
 * conversation with the Launcher.  To print, the Guest describes its bytes
 * with a struct lguest_dma (one section: physical address and length) and
 * sends it with SEND_DMA to key 0, the console's key.  Key 0 is ordinary
 * private memory, so the Host does not deliver it to another Guest: it
 * stops running us and tells the Launcher "DMA at this address, key 0".  The
 * Launcher writes the bytes to its standard output, puts the count in
 * used_len, and runs us again; from our side SEND_DMA simply returns.
 *
 * We zero used_len before every send, as 2.6.23 did, and send at most 256
 * bytes at a time, the size of the 2.6.23 console's output buffer. */
static struct lguest_dma console_dma;

void console_write(const char *buf, unsigned len)
{
	while (len) {
		unsigned n = len > 256 ? 256 : len;

		console_dma.used_len = 0;
		console_dma.addr[0] = __pa(buf);
		console_dma.len[0] = n;
		console_dma.len[1] = 0;
		hcall(LHCALL_SEND_DMA, LGUEST_CONSOLE_DMA_KEY, __pa(&console_dma), 0);
		buf += n;
		len -= n;
	}
}
/*:*/

void puts_(const char *s)
{
	console_write(s, strlen(s));
}

/*G:070 printk() is a very small printf: enough to show numbers and strings
 * in tests, and nothing that would drag in the compiler's helper library
 * (there is none for 32-bit code here: no 64-bit division, no floating
 * point).  It collects output in a 256-byte buffer on the stack, which is in
 * the linear map like everything else, so its physical address is simply
 * __pa() of it, and flushes with one console DMA whenever it fills. */
struct pbuf {
	unsigned n, total;
	char buf[256];
};

static void pflush(struct pbuf *p)
{
	console_write(p->buf, p->n);
	p->n = 0;
}

static void pput(struct pbuf *p, char c)
{
	if (p->n == sizeof(p->buf))
		pflush(p);
	p->buf[p->n++] = c;
	p->total++;
}

static void ppad(struct pbuf *p, char c, int count)
{
	while (count-- > 0)
		pput(p, c);
}

/* One field: sign/prefix, padding and text, honouring width, '0' and '-'. */
static void pfield(struct pbuf *p, const char *prefix, const char *s,
		   unsigned len, int width, int left, char pad)
{
	int fill = width - (int)(len + strlen(prefix));

	if (!left && pad == ' ')
		ppad(p, ' ', fill);
	while (*prefix)
		pput(p, *prefix++);
	if (!left && pad == '0')
		ppad(p, '0', fill);
	while (len--)
		pput(p, *s++);
	if (left)
		ppad(p, ' ', fill);
}

static unsigned utoa(char *end, unsigned long v, int hex, int upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char *s = end;

	do {
		if (hex) {
			*--s = digits[v & 15];
			v >>= 4;
		} else {
			*--s = digits[v % 10];
			v /= 10;
		}
	} while (v);
	return end - s;
}

int vprintk(const char *fmt, __builtin_va_list ap)
{
	struct pbuf p;
	char num[12];
	char *end = num + sizeof(num);

	p.n = p.total = 0;
	for (; *fmt; fmt++) {
		int width = 0, left = 0;
		char pad = ' ';
		const char *prefix = "";
		unsigned len;
		unsigned long v;
		const char *s;

		if (*fmt != '%') {
			pput(&p, *fmt);
			continue;
		}
		fmt++;
		for (; *fmt == '-' || *fmt == '0'; fmt++) {
			if (*fmt == '-')
				left = 1;
			else
				pad = '0';
		}
		for (; *fmt >= '0' && *fmt <= '9'; fmt++)
			width = width * 10 + (*fmt - '0');
		while (*fmt == 'l' || *fmt == 'h' || *fmt == 'z')
			fmt++;	/* every integer is 32 bits here */

		switch (*fmt) {
		case 'd':
		case 'i': {
			long sv = __builtin_va_arg(ap, long);

			v = sv < 0 ? -(unsigned long)sv : (unsigned long)sv;
			if (sv < 0)
				prefix = "-";
			len = utoa(end, v, 0, 0);
			pfield(&p, prefix, end - len, len, width, left, pad);
			break;
		}
		case 'u':
		case 'x':
		case 'X':
			v = __builtin_va_arg(ap, unsigned long);
			len = utoa(end, v, *fmt != 'u', *fmt == 'X');
			pfield(&p, prefix, end - len, len, width, left, pad);
			break;
		case 'p':
			v = (unsigned long)__builtin_va_arg(ap, void *);
			len = utoa(end, v, 1, 0);
			pfield(&p, "0x", end - len, len, 10, 0, '0');
			break;
		case 's':
			s = __builtin_va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			pfield(&p, "", s, strlen(s), width, left, ' ');
			break;
		case 'c':
			num[0] = (char)__builtin_va_arg(ap, int);
			pfield(&p, "", num, 1, width, left, ' ');
			break;
		case '%':
			pput(&p, '%');
			break;
		case '\0':
			fmt--;	/* a lone '%' at the end: stop cleanly */
			break;
		default:	/* unknown: print it as written */
			pput(&p, '%');
			pput(&p, *fmt);
			break;
		}
	}
	if (p.n)
		pflush(&p);
	return p.total;
}

int printk(const char *fmt, ...)
{
	__builtin_va_list ap;
	int n;

	__builtin_va_start(ap, fmt);
	n = vprintk(fmt, ap);
	__builtin_va_end(ap);
	return n;
}
/*:*/

/* The string-instruction versions are one instruction each for the
 * emulator, and gcc cannot turn them back into calls to themselves. */
void *memset(void *s, int c, size_t n)
{
	void *d = s;

	__asm__ __volatile__("rep stosb"
			     : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return s;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	void *d = dst;

	__asm__ __volatile__("rep movsb"
			     : "+D"(d), "+S"(src), "+c"(n) : : "memory");
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;

	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	const char *e = s;

	while (*e)
		e++;
	return e - s;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (u8)*a - (u8)*b;
}
