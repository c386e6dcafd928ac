/* The bundled Guest OS: what its files share.  The runtime (rt/lguest.h)
 * gives hypercalls, lguest_data, printk and trap entry; this header adds the
 * kernel's own pieces: memory, interrupts, time, the lguest bus and its three
 * drivers, the network stack and the shell. */
#ifndef LGUEST_OS_H
#define LGUEST_OS_H

#include "lguest.h"

typedef unsigned long long u64;
typedef int s32;

#define barrier()	__asm__ __volatile__("" ::: "memory")
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define PAGE_MASK	(~(PAGE_SIZE - 1))
#define PAGE_ALIGN(x)	(((x) + PAGE_SIZE - 1) & PAGE_MASK)
#define MB		(1024UL * 1024UL)

/* --- boot.c --- */
#define COMMAND_LINE_SIZE 2048
extern char command_line[COMMAND_LINE_SIZE];
extern unsigned long mem_size;		/* bytes of RAM (max_pfn << 12) */
extern u64 banner_tsc, prompt_tsc;
const char *cmdline_option(const char *name);	/* value after "name=", or 0 */
void panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void poweroff(void) __attribute__((noreturn));

/* --- mm.c --- */
void paging_init(void);
void paging_init_late(void);
void *lguest_map(unsigned long phys, unsigned pages);
void *alloc_bootmem(unsigned long size);	/* page-aligned, not cleared */
void clear_page(void *page);
extern unsigned long lowmem_size;	/* bytes of RAM in the linear map */

/* --- irq.c: the virtual interrupt flag, IRQs, the clock --- */
static inline unsigned long local_irq_save(void)
{
	unsigned long flags = lguest_data.irq_enabled;

	barrier();
	lguest_data.irq_enabled = 0;
	barrier();
	return flags;
}

static inline void local_irq_restore(unsigned long flags)
{
	barrier();
	lguest_data.irq_enabled = flags;
	barrier();
}

static inline void local_irq_disable(void)
{
	barrier();
	lguest_data.irq_enabled = 0;
	barrier();
}

static inline void local_irq_enable(void)
{
	barrier();
	lguest_data.irq_enabled = X86_EFLAGS_IF;
	barrier();
}

typedef void (*irq_handler_t)(unsigned irq, void *dev);
void trap_init(void);
void request_irq(unsigned irq, irq_handler_t handler, void *dev);
void safe_halt(void);
void async_hcall(unsigned long call, unsigned long a1, unsigned long a2, unsigned long a3);

#define IDLE_FOREVER (~0UL)
extern volatile unsigned long jiffies;
extern unsigned hz;			/* periodic tick rate, 0 = tickless */
void idle(unsigned long timeout_ms);
void time_init(void);
u64 rdtsc(void);
extern u64 boot_tsc;
u64 clock_ns(void);		/* nanoseconds since boot */
unsigned long clock_ms(void);
const char *clock_name(void);
u32 do_div(u64 *n, u32 base);	/* *n /= base; returns the remainder */
u64 cycles_to_ns(u64 cycles);

/* --- bus.c: the lguest bus --- */
#define LGUEST_MAX_DEVICES	16
#define LGUEST_DEVICE_T_CONSOLE	1
#define LGUEST_DEVICE_T_NET	2
#define LGUEST_DEVICE_T_BLOCK	3

#define LGUEST_DEVICE_S_ACKNOWLEDGE	1
#define LGUEST_DEVICE_S_DRIVER		2
#define LGUEST_DEVICE_S_DRIVER_OK	4
#define LGUEST_DEVICE_S_REMOVED		8
#define LGUEST_DEVICE_S_REMOVED_ACK	16
#define LGUEST_DEVICE_S_FAILED		128

#define LGUEST_DEVICE_F_RANDOMNESS	0x8000
#define LGUEST_NET_F_NOCSUM		0x4000

struct lguest_device_desc {
	u16 type;
	u16 features;
	u16 status;
	u16 num_pages;
	u32 pfn;
};
_Static_assert(sizeof(struct lguest_device_desc) == 12, "device desc");

struct lguest_device {
	unsigned index;
	void *private;
	const char *name;	/* what the driver called it: hvc0, lgba, eth0 */
};

extern volatile struct lguest_device_desc *lguest_devices;
extern unsigned long lguest_devices_phys;
extern struct lguest_device lguest_devs[LGUEST_MAX_DEVICES];

static inline unsigned lgdev_irq(const struct lguest_device *dev)
{
	return dev->index + 1;
}

unsigned lguest_bus_init(void);		/* maps the page; returns #devices */
void lguest_bus_probe(void);
const char *lguest_device_type_name(unsigned type);
int lguest_bind_dma(unsigned long key, struct lguest_dma *dmas, unsigned num, u8 irq);
void lguest_unbind_dma(unsigned long key, struct lguest_dma *dmas);
void lguest_send_dma(unsigned long key, struct lguest_dma *dma);
unsigned buf_to_dma(const void *buf, unsigned len, struct lguest_dma *dma);

/* --- console.c --- */
int lguestcons_probe(struct lguest_device *dev);
int console_getc(void);		/* -1 when nothing is waiting */
int console_pending(void);
int ctrl_c_pending(void);

/* --- block.c --- */
#define SECTOR_SIZE 512
struct blockdev;
int lguestblk_probe(struct lguest_device *dev);
struct blockdev *blk_find(const char *name);	/* 0 = the first */
const char *blk_name(const struct blockdev *bd);
u32 blk_sectors(const struct blockdev *bd);
int blk_rw(struct blockdev *bd, int write, u32 sector, void *buf, unsigned bytes);
void blk_describe(const struct lguest_device *dev);

/* --- net.c: the driver --- */
#define ETH_ALEN	6
#define ETH_HLEN	14
#define ETH_DATA_LEN	1500
#define ETH_FRAME_LEN	(ETH_HLEN + ETH_DATA_LEN)
struct net_device;
int lguestnet_probe(struct lguest_device *dev);
unsigned net_device_count(void);
struct net_device *net_device(unsigned i);
const u8 *netdev_mac(const struct net_device *nd);
const char *netdev_name(const struct net_device *nd);
int netdev_nocsum(const struct net_device *nd);
void net_xmit(struct net_device *nd, const void *frame, unsigned len);
int net_rx_pending(void);
int net_rx_dequeue(struct net_device **nd, void *frame);	/* length or 0 */
void net_describe(const struct lguest_device *dev);
void net_show(void);

/* --- inet.c: ARP, IPv4, ICMP --- */
extern u32 my_ip;		/* host byte order */
void inet_init(void);
void net_poll(void);		/* handle every received frame */
unsigned long net_timer_ms(void);	/* until the stack's next deadline */
void inet_show(void);
int ping(u32 ip, unsigned count, unsigned interval_ms);
int parse_ip(const char *s, u32 *ip);
void format_ip(char *buf, u32 ip);

/* --- shell.c --- */
void shell_run(void) __attribute__((noreturn));
int interrupted(void);		/* ^C typed since the last command? */

/* --- lib.c --- */
char *strchr(const char *s, int c);
int strncmp(const char *a, const char *b, size_t n);
char *strncpy_z(char *dst, const char *src, size_t n);	/* always NUL-ends */
int parse_uint(const char *s, unsigned long *out);
u16 ip_checksum(const void *data, unsigned len, u32 sum);
void hexdump(const void *data, unsigned len);
void format_mac(char *buf, const u8 *mac);

static inline u16 htons(u16 v)
{
	return (u16)((v << 8) | (v >> 8));
}
#define ntohs htons
static inline u32 htonl(u32 v)
{
	return __builtin_bswap32(v);
}
#define ntohl htonl

#endif
