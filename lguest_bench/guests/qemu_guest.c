/*M:985 The QEMU baselines' Guest: a bare 32-bit kernel that QEMU boots with -kernel (multiboot),
 * with nothing of lguest in it.  It runs one loop chosen on its command line ("mode=N n=OPS
 * laps=L mb=MB"), and before the first lap and after each one it writes a '.' to the debug console
 * (port 0xe9), which the Python side timestamps as it arrives.  Anything unexpected (an exception
 * it did not ask for, a bad command line) is written there as a line starting with '!', and the
 * Guest leaves through isa-debug-exit (port 0xf4): value 0 when all went well, 1 when not.
 *
 * The loops, one op each: an `inb` from port 0x80, which nothing in the kernel handles, so every
 * one is an exit to QEMU; an `int $0x80` from CPL 3 to a DPL 3 trap gate whose handler is `iret`;
 * a load from an unmapped page whose #PF handler skips the load (as lguest's pagefault benchmark
 * does); and a store per 64-byte line through MB MiB at 16 MiB. :*/

#define DEBUGCON	0xe9
#define EXIT_PORT	0xf4
#define MB_MAGIC	0x1BADB002
#define HOLE		0x00800000UL		/* the unmapped 4 MiB: the #PF target */
#define BUF_BASE	(16UL << 20)

enum { M_PROBE, M_PIO, M_SYSCALL, M_PAGEFAULT, M_MEMBURN };

__asm__(
	".section .multiboot, \"a\"\n"
	".align 4\n"
	".long 0x1BADB002, 0, -0x1BADB002\n"
	".text\n"
	".globl _start\n"
	"_start:\n"
	"	cli\n"
	"	movl $kstack_top, %esp\n"
	"	pushl %ebx\n"			/* the multiboot information */
	"	pushl %eax\n"			/* the multiboot magic */
	"	call kmain\n"
	"1:	hlt\n"
	"	jmp 1b\n"

	/* Exceptions we did not expect: vector in %eax, then report. */
	".macro unexpected v\n"
	"	.globl unexpected_\\v\n"
	"unexpected_\\v:\n"
	"	movl $\\v, %eax\n"
	"	jmp unexpected_common\n"
	".endm\n"
	".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"	unexpected \\v\n"
	".endr\n"
	"unexpected_common:\n"
	"	movl %esp, %edx\n"
	"	movl $0x10, %ecx\n"
	"	movl %ecx, %ds\n"
	"	movl %ecx, %es\n"
	"	pushl %edx\n"
	"	pushl %eax\n"
	"	call die_trap\n"

	/* #PF: only the one load from HOLE is expected; skip its 2 bytes (8b 01). */
	".globl pf_entry\n"
	"pf_entry:\n"
	"	pushl %eax\n"
	"	movl %cr2, %eax\n"
	"	cmpl $0x00800000, %eax\n"
	"	jne 1f\n"
	"	popl %eax\n"
	"	addl $2, 4(%esp)\n"		/* past the error code: the saved EIP */
	"	addl $4, %esp\n"		/* drop the error code */
	"	iret\n"
	"1:	popl %eax\n"
	"	movl $14, %eax\n"
	"	jmp unexpected_common\n"

	/* The system call: straight back to CPL 3. */
	".globl syscall_entry\n"
	"syscall_entry:\n"
	"	iret\n");

static inline void outb(unsigned short port, unsigned char v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(unsigned short port, unsigned v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static void puts_dbg(const char *s)
{
	while (*s)
		outb(DEBUGCON, *s++);
}

static void puthex(unsigned v)
{
	char buf[11] = "0x";
	for (int i = 0; i < 8; i++)
		buf[2 + i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 15];
	buf[10] = 0;
	puts_dbg(buf);
}

static void __attribute__((noreturn)) finish(unsigned code)
{
	outl(EXIT_PORT, code);			/* QEMU exits with (code << 1) | 1 */
	for (;;)
		__asm__ volatile("cli; hlt");
}

static void __attribute__((noreturn)) die(const char *why)
{
	puts_dbg("!");
	puts_dbg(why);
	puts_dbg("\n");
	finish(1);
}

static const char *stage = "starting";

void __attribute__((noreturn, used)) die_trap(unsigned vector, unsigned *frame)
{
	static const char *const names[32] = {
		"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "vector 9", "#TS",
		"#NP", "#SS", "#GP", "#PF", "vector 15", "#MF", "#AC", "#MC", "#XM",
	};
	unsigned cr2;
	__asm__ volatile("movl %%cr2, %0" : "=r"(cr2));
	puts_dbg("!unexpected ");
	puts_dbg(names[vector & 31] ? names[vector & 31] : "exception");
	puts_dbg(" while ");
	puts_dbg(stage);
	puts_dbg(", eip ");
	/* Vectors 8, 10-14 and 17 push an error code before EIP. */
	int ec = vector == 8 || (vector >= 10 && vector <= 14) || vector == 17;
	puthex(frame[ec]);
	puts_dbg(" cr2 ");
	puthex(cr2);
	puts_dbg("\n");
	finish(1);
}

/*M:986 The machine the loops run on: a GDT with kernel and user segments and a TSS (so that
 * `int $0x80` from CPL 3 finds a kernel stack), an IDT whose every exception reports itself, and
 * one page directory of 4 MiB pages mapping the first 128 MiB one to one, user-accessible, except
 * the 4 MiB at HOLE, left not present. :*/
struct gate { unsigned short off_lo, sel; unsigned char zero, type; unsigned short off_hi; };
struct tss { unsigned link, esp0, ss0, rest[23]; } __attribute__((packed));

static unsigned long long gdt[6] __attribute__((aligned(8)));
static struct gate idt[256] __attribute__((aligned(8)));
static struct tss tss __attribute__((aligned(16)));
static unsigned pgdir[1024] __attribute__((aligned(4096)));
unsigned char kstack[16384] __attribute__((aligned(16)));
unsigned char ustack[16384] __attribute__((aligned(16)));
__asm__(".globl kstack_top\n.set kstack_top, kstack + 16384\n");

extern char pf_entry[], syscall_entry[];
#define STUB(v) extern char unexpected_##v[];
STUB(0) STUB(1) STUB(2) STUB(3) STUB(4) STUB(5) STUB(6) STUB(7) STUB(8) STUB(9) STUB(10)
STUB(11) STUB(12) STUB(13) STUB(15) STUB(16) STUB(17) STUB(18) STUB(19) STUB(20) STUB(21)
STUB(22) STUB(23) STUB(24) STUB(25) STUB(26) STUB(27) STUB(28) STUB(29) STUB(30) STUB(31)
static char *const stubs[32] = {
	unexpected_0, unexpected_1, unexpected_2, unexpected_3, unexpected_4, unexpected_5,
	unexpected_6, unexpected_7, unexpected_8, unexpected_9, unexpected_10, unexpected_11,
	unexpected_12, unexpected_13, pf_entry, unexpected_15, unexpected_16, unexpected_17,
	unexpected_18, unexpected_19, unexpected_20, unexpected_21, unexpected_22, unexpected_23,
	unexpected_24, unexpected_25, unexpected_26, unexpected_27, unexpected_28, unexpected_29,
	unexpected_30, unexpected_31,
};

static unsigned long long seg(unsigned base, unsigned limit, unsigned access, unsigned flags)
{
	return (limit & 0xffffULL) | ((base & 0xffffffULL) << 16) | ((unsigned long long)access << 40)
		| ((limit >> 16 & 0xfULL) << 48) | ((unsigned long long)flags << 52)
		| ((unsigned long long)(base >> 24) << 56);
}

static void set_gate(int v, void *fn, unsigned char type)
{
	unsigned a = (unsigned)fn;
	idt[v] = (struct gate){ a & 0xffff, 0x08, 0, type, a >> 16 };
}

static void setup_cpu(int paging)
{
	gdt[1] = seg(0, 0xfffff, 0x9a, 0xc);		/* 0x08 kernel code */
	gdt[2] = seg(0, 0xfffff, 0x92, 0xc);		/* 0x10 kernel data */
	gdt[3] = seg(0, 0xfffff, 0xfa, 0xc);		/* 0x1b user code */
	gdt[4] = seg(0, 0xfffff, 0xf2, 0xc);		/* 0x23 user data */
	gdt[5] = seg((unsigned)&tss, sizeof(tss) - 1, 0x89, 0);	/* 0x28 TSS */
	tss.esp0 = (unsigned)kstack + sizeof(kstack);
	tss.ss0 = 0x10;
	struct { unsigned short lim; unsigned base; } __attribute__((packed))
		gd = { sizeof(gdt) - 1, (unsigned)gdt }, id = { sizeof(idt) - 1, (unsigned)idt };
	__asm__ volatile("lgdt %0\n"
			 "ljmp $0x08, $1f\n"
			 "1: movl $0x10, %%eax\n"
			 "movl %%eax, %%ds; movl %%eax, %%es; movl %%eax, %%ss\n"
			 "movl %%eax, %%fs; movl %%eax, %%gs\n"
			 : : "m"(gd) : "eax", "memory");
	for (int v = 0; v < 32; v++)
		set_gate(v, stubs[v], 0x8e);			/* interrupt gate, DPL 0 */
	set_gate(0x80, syscall_entry, 0xef);			/* trap gate, DPL 3 */
	__asm__ volatile("lidt %0; ltr %w1" : : "m"(id), "r"(0x28) : "memory");
	if (!paging)
		return;
	stage = "enabling 32-bit paging";
	for (unsigned i = 0; i < 32; i++)			/* 32 x 4 MiB, PS|U|W|P */
		pgdir[i] = (i << 22) | 0x87;
	pgdir[HOLE >> 22] = 0;
	__asm__ volatile("movl %%cr4, %%eax; orl $0x10, %%eax; movl %%eax, %%cr4\n"	/* PSE */
			 "movl %0, %%cr3\n"
			 "movl %%cr0, %%eax; orl $0x80000000, %%eax; movl %%eax, %%cr0\n"
			 : : "r"(pgdir) : "eax", "memory");
}

/*M:987 The laps.  The marker is one byte to the debug console: itself an exit to QEMU, the same
 * in every mode, and spread over the lap's N ops.  The system call loop runs at CPL 3 (entered by
 * an iret with IOPL 3, so that it can write its own markers and the exit port). :*/
static unsigned n_ops, n_laps, n_mb;
static volatile unsigned sink;

static inline void mark(void)
{
	outb(DEBUGCON, '.');
}

static void pio_laps(void)
{
	mark();
	for (unsigned lap = 0; lap < n_laps; lap++) {
		for (unsigned i = 0; i < n_ops; i++) {
			unsigned char v;
			__asm__ volatile("inb $0x80, %0" : "=a"(v));
			sink += v;
		}
		mark();
	}
}

static void pagefault_laps(void)
{
	mark();
	for (unsigned lap = 0; lap < n_laps; lap++) {
		for (unsigned i = 0; i < n_ops; i++) {
			unsigned v;
			__asm__ volatile("movl (%%ecx), %%eax" : "=a"(v) : "c"(HOLE), "a"(0) : "memory");
			sink += v;
		}
		mark();
	}
}

static void memburn_laps(void)
{
	volatile unsigned *p = (volatile unsigned *)BUF_BASE;
	unsigned words = n_mb << 18;
	for (unsigned off = 0; off < words; off += 16)		/* touch it all once first */
		p[off] = 0;
	mark();
	for (unsigned lap = 0; lap < n_laps; lap++) {
		for (unsigned off = 0; off < words; off += 16)
			p[off] = lap;
		mark();
	}
}

void __attribute__((noreturn, used)) user_main(void)
{
	mark();
	for (unsigned lap = 0; lap < n_laps; lap++) {
		for (unsigned i = 0; i < n_ops; i++)
			__asm__ volatile("int $0x80" : : : "memory");
		mark();
	}
	finish(0);
}

static void __attribute__((noreturn)) to_user(void)
{
	__asm__ volatile("movl $0x23, %%eax\n"
			 "movl %%eax, %%ds; movl %%eax, %%es\n"
			 "pushl $0x23\n"		/* SS */
			 "pushl %0\n"			/* ESP */
			 "pushl $0x3002\n"		/* EFLAGS: IOPL 3, IF off */
			 "pushl $0x1b\n"		/* CS */
			 "pushl $user_main\n"		/* EIP */
			 "iret\n"
			 : : "r"((unsigned)ustack + sizeof(ustack)) : "eax", "memory");
	__builtin_unreachable();
}

static const char *arg(const char *cmd, const char *key, unsigned *out)
{
	for (const char *p = cmd; p && *p; p++) {
		if (p != cmd && p[-1] != ' ')
			continue;
		const char *k = key, *q = p;
		while (*k && *q == *k)
			k++, q++;
		if (*k || *q != '=')
			continue;
		unsigned v = 0;
		for (q++; *q >= '0' && *q <= '9'; q++)
			v = v * 10 + (*q - '0');
		*out = v;
		return q;
	}
	return 0;
}

void __attribute__((noreturn, used)) kmain(unsigned magic, const unsigned *mbi)
{
	unsigned mode = M_PROBE;
	const char *cmd = 0;
	if (magic == 0x2BADB002 && (mbi[0] & 4))
		cmd = (const char *)mbi[4];
	arg(cmd, "mode", &mode);
	n_ops = 1000, n_laps = 3, n_mb = 8;
	arg(cmd, "n", &n_ops);
	arg(cmd, "laps", &n_laps);
	arg(cmd, "mb", &n_mb);
	if (n_mb < 1 || n_mb > 64)
		die("mb must be 1..64");
	stage = "loading the GDT, IDT and TSS";
	setup_cpu(mode == M_PAGEFAULT || mode == M_MEMBURN);
	stage = "running the benchmark";
	switch (mode) {
	case M_PROBE:
		mark();
		break;
	case M_PIO:
		pio_laps();
		break;
	case M_SYSCALL:
		to_user();
	case M_PAGEFAULT:
		pagefault_laps();
		break;
	case M_MEMBURN:
		memburn_laps();
		break;
	default:
		die("unknown mode");
	}
	finish(0);
}
