/* The Guest runtime's one header: hypercall numbers, the shared structures
 * and the small library every test Guest links against.  It is included by
 * both C and assembly (head.S), so the C-only parts sit behind __ASSEMBLY__. */
#ifndef LGUEST_RT_H
#define LGUEST_RT_H

/* Hypercall numbers (abi §3.2).  11 was GET_WALLCLOCK before 2.6.23. */
#define LHCALL_FLUSH_ASYNC	0
#define LHCALL_LGUEST_INIT	1
#define LHCALL_CRASH		2
#define LHCALL_LOAD_GDT		3
#define LHCALL_NEW_PGTABLE	4
#define LHCALL_FLUSH_TLB	5
#define LHCALL_LOAD_IDT_ENTRY	6
#define LHCALL_SET_STACK	7
#define LHCALL_TS		8
#define LHCALL_SET_CLOCKEVENT	9
#define LHCALL_HALT		10
#define LHCALL_BIND_DMA		12
#define LHCALL_SEND_DMA		13
#define LHCALL_SET_PTE		14
#define LHCALL_SET_PMD		15
#define LHCALL_LOAD_TLS		16

#define LGUEST_TRAP_ENTRY	0x1F
#define LHCALL_RING_SIZE	64
#define LGUEST_IRQS		32
#define LGUEST_MAX_DMA_SECTIONS	16
#define LGUEST_CONSOLE_DMA_KEY	0
#define X86_EFLAGS_IF		0x200

#define __KERNEL_CS		0x61	/* GDT 12 with RPL 1 */
#define __KERNEL_DS		0x69	/* GDT 13 with RPL 1 */

#define PAGE_SIZE		4096

/* Offsets into struct lguest_data for assembly (checked below). */
#define LGUEST_DATA_irq_enabled	0x000
#define LGUEST_DATA_noirq_start	0x460
#define LGUEST_DATA_noirq_end	0x464

#ifdef __ASSEMBLY__

#define PAGE_OFFSET		0xC0000000

#else /* C from here on */

#define PAGE_OFFSET		0xC0000000UL
#define __pa(x)			((unsigned long)(x) - PAGE_OFFSET)
#define __va(x)			((void *)((unsigned long)(x) + PAGE_OFFSET))

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef __SIZE_TYPE__ size_t;

#define offsetof(t, m)	__builtin_offsetof(t, m)
#define mb()		__asm__ __volatile__("lock; addl $0,0(%%esp)" ::: "memory")
#define wmb()		__asm__ __volatile__("" ::: "memory")

#ifndef LGUEST_RT_HOSTED
/*G:030 How does a Guest find its Host?  It cannot simply call it: the
 * Host is not code the Guest could jump to.  What it can do is trap.  A
 * Guest kernel runs at privilege level 1, and the Host has set up
 * interrupt gate 0x1F so that level 1 may use it: the instruction
 * "int $0x1f" is the Guest knocking on the Host's door.
 *
 * The call number goes in %eax and up to three arguments in %edx, %ebx and
 * %ecx.  Most calls hand back nothing, leaving %eax as it was; BIND_DMA
 * answers 1 or 0 there.  The "memory" clobber matters: the Host reads and
 * writes Guest memory during the call, so the compiler must not keep values
 * in registers across it. */
static inline unsigned long hcall(unsigned long call, unsigned long arg1,
				  unsigned long arg2, unsigned long arg3)
{
	__asm__ __volatile__("int $0x1f"
			     : "+a"(call)
			     : "d"(arg1), "b"(arg2), "c"(arg3)
			     : "memory");
	return call;
}
/*:*/
#else
/* The runtime's C code built as a 32-bit Linux program for a unit test:
 * the test supplies hcall(). */
unsigned long hcall(unsigned long call, unsigned long arg1,
		    unsigned long arg2, unsigned long arg3);
#endif

/*G:040 Trapping for everything would be slow, so the Guest and Host also
 * share one structure in Guest memory: lguest_data.  The Guest tells the
 * Host where it is with the very first hypercall, LGUEST_INIT, and after
 * that both sides simply read and write it.
 *
 * The interrupt flag lives here (irq_enabled), because the Guest may not
 * touch the real one at privilege level 1; so do the masked interrupts, the
 * faulting address of the last page fault (the Guest cannot read %cr2
 * either), the wall-clock time, and a ring of 64 hypercalls the Guest can
 * queue without trapping: a slot whose status byte is 0xFF is free, 0 means
 * "please run this", and the Host drains the ring every time it gets
 * control.  At the end the Host fills in a few facts at LGUEST_INIT, and
 * the Guest says where its iret sequence lives (see lguest_iret). */
struct lguest_timespec {
	long tv_sec;
	long tv_nsec;
};

struct hcall_args {
	unsigned long eax, edx, ebx, ecx;	/* the order the Host reads */
};

struct lguest_data {
	unsigned long irq_enabled;		/* 0x200 on, 0 off */
	unsigned long blocked_interrupts;	/* bit n masks IRQ n */
	unsigned long cr2;			/* Host writes before a #PF */
	struct lguest_timespec time;		/* Host writes */
	u8 hcall_status[LHCALL_RING_SIZE];	/* 0xFF done, 0 pending */
	struct hcall_args hcalls[LHCALL_RING_SIZE];
	unsigned long reserve_mem;		/* Host: 4 MB at the top */
	u16 guestid;				/* Host: 0..15 */
	unsigned long tsc_khz;			/* Host: 0 = don't use TSC */
	unsigned long noirq_start;		/* Guest: no IRQs in */
	unsigned long noirq_end;		/*   [noirq_start, noirq_end) */
};
/*:*/

_Static_assert(sizeof(struct lguest_data) == 1128, "lguest_data size");
_Static_assert(offsetof(struct lguest_data, time) == 0x0C, "time");
_Static_assert(offsetof(struct lguest_data, hcall_status) == 0x14, "status");
_Static_assert(offsetof(struct lguest_data, hcalls) == 0x54, "hcalls");
_Static_assert(offsetof(struct lguest_data, reserve_mem) == 0x454, "reserve");
_Static_assert(offsetof(struct lguest_data, guestid) == 0x458, "guestid");
_Static_assert(offsetof(struct lguest_data, tsc_khz) == 0x45C, "tsc_khz");
_Static_assert(offsetof(struct lguest_data, noirq_start)
	       == LGUEST_DATA_noirq_start, "noirq_start");
_Static_assert(offsetof(struct lguest_data, noirq_end)
	       == LGUEST_DATA_noirq_end, "noirq_end");

/* One DMA descriptor (abi §4.1): up to 16 sections of guest-physical
 * memory; the first zero length ends the list. */
struct lguest_dma {
	unsigned long used_len;
	unsigned long addr[LGUEST_MAX_DMA_SECTIONS];
	u16 len[LGUEST_MAX_DMA_SECTIONS];
};

_Static_assert(sizeof(struct lguest_dma) == 100, "lguest_dma size");
_Static_assert(offsetof(struct lguest_dma, len) == 68, "lguest_dma len");

extern struct lguest_data lguest_data;
extern void *boot_params;		/* virtual address of the zero page */

/* Symbols from head.S (virtual addresses). */
extern char lguest_noirq_start[], lguest_noirq_end[];
void lguest_iret(void);

/* Provided by each Guest program. */
int main(void);

/* Runtime (rt.c). */
void guest_start(void *boot) __attribute__((noreturn));
void lguest_init(void);
void lguest_crash(const char *msg) __attribute__((noreturn));
const char *boot_cmdline(void);
void console_write(const char *buf, unsigned len);
void puts_(const char *s);
int printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintk(const char *fmt, __builtin_va_list ap);

void *memset(void *s, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);

/* Traps (traps.S, traps.c): the frame trap_dispatch() sees.  esp and ss are
 * only there when the trap came from user mode. */
struct trapframe {
	unsigned int es, ds;
	unsigned int edi, esi, ebp, esp_pushal, ebx, edx, ecx, eax;
	unsigned int trapnum, errcode;
	unsigned int eip, cs, eflags;
	unsigned int esp, ss;
};
typedef void (*trap_handler_t)(struct trapframe *tf);
void install_trap(unsigned vector, trap_handler_t h, unsigned type, unsigned dpl);
void set_idt_gate(unsigned vector, unsigned long addr, unsigned type, unsigned dpl);
#define GATE_INTERRUPT 0xE
#define GATE_TRAP 0xF

#endif /* __ASSEMBLY__ */


#endif /* LGUEST_RT_H */
