/* Small library routines the rest of the OS shares. */
#include "os.h"

char *strchr(const char *s, int c)
{
	for (; *s; s++)
		if (*s == (char)c)
			return (char *)s;
	return c ? 0 : (char *)s;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (u8)*a - (u8)*b;
		if (!*a)
			break;
	}
	return 0;
}

char *strncpy_z(char *dst, const char *src, size_t n)
{
	size_t i = 0;

	if (!n)
		return dst;
	for (; i < n - 1 && src[i]; i++)
		dst[i] = src[i];
	dst[i] = 0;
	return dst;
}

/* Decimal, or hexadecimal after 0x; the whole string must be a number. */
int parse_uint(const char *s, unsigned long *out)
{
	unsigned long v = 0;
	int hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');

	if (hex)
		s += 2;
	if (!*s)
		return 0;
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (hex && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
			d = (*s | 0x20) - 'a' + 10;
		else
			return 0;
		if (hex ? v > 0x0FFFFFFF : v > 429496729 || (v == 429496729 && d > 5))
			return 0;
		v = hex ? v << 4 | d : v * 10 + d;
	}
	*out = v;
	return 1;
}

/* The Internet checksum (RFC 1071) of data, continuing from sum, folded and
 * complemented, as a host-order number to store with htons(). Over data that
 * includes a correct checksum it gives 0. */
u16 ip_checksum(const void *data, unsigned len, u32 sum)
{
	const u8 *p = data;

	for (; len > 1; len -= 2, p += 2)
		sum += (u32)p[0] << 8 | p[1];
	if (len)
		sum += (u32)p[0] << 8;
	while (sum >> 16)
		sum = (sum & 0xFFFF) + (sum >> 16);
	return (u16)~sum;
}

void format_mac(char *buf, const u8 *mac)
{
	static const char hex[] = "0123456789abcdef";
	unsigned i;

	for (i = 0; i < ETH_ALEN; i++) {
		*buf++ = hex[mac[i] >> 4];
		*buf++ = hex[mac[i] & 15];
		*buf++ = i < ETH_ALEN - 1 ? ':' : 0;
	}
}

/* hexdump -C style: offset, 16 bytes in hex, the printable ones; a run of
 * lines equal to the one before is shown as a single "*". */
void hexdump(const void *data, unsigned len)
{
	const u8 *p = data;
	unsigned off, i;
	int starred = 0;

	for (off = 0; off < len; off += 16) {
		char line[80], *s = line;
		unsigned n = len - off < 16 ? len - off : 16;

		if (off && n == 16 && !memcmp(p + off, p + off - 16, 16)) {
			if (!starred)
				printk("*\n");
			starred = 1;
			continue;
		}
		starred = 0;
		for (i = 0; i < 16; i++) {
			static const char hex[] = "0123456789abcdef";

			if (i == 8)
				*s++ = ' ';
			*s++ = ' ';
			*s++ = i < n ? hex[p[off + i] >> 4] : ' ';
			*s++ = i < n ? hex[p[off + i] & 15] : ' ';
		}
		*s++ = ' ', *s++ = ' ', *s++ = '|';
		for (i = 0; i < n; i++) {
			u8 c = p[off + i];

			*s++ = c >= 0x20 && c < 0x7F ? c : '.';
		}
		*s++ = '|';
		*s = 0;
		printk("%08x %s\n", off, line);
	}
	printk("%08x\n", len);
}
