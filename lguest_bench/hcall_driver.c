/* hcall_driver: the C baselines for bench/hypercall.py and lguest-bench.
 *
 *   hcall_driver out N LAPS
 *	The floor: a minimal VM (real mode, no paging) running
 *	"1: out %al,$0x10; jmp 1b"; LAPS laps of N KVM_RUN round trips.
 *
 *   hcall_driver ioctl N LAPS
 *	The price of one vCPU ioctl that does not run the vCPU: N KVM_GET_REGS.
 *
 *   hcall_driver guest DIR N LAPS PAGE_OFFSET FRAME_OFFSET FRAME_SIZE [min|sregs|sync] [NAME=VALUE...]
 *	The same lguest Guest under the same Switcher as the Python Host: DIR
 *	holds what bench/hypercall.py dumped from the Python Host's VM at the
 *	moment it was about to KVM_RUN the benchmark loop (ram.bin = memory slot
 *	0 at gpa 0, host.bin = the Host slot at 0x100000000, regs.bin and
 *	sregs.bin = raw struct kvm_regs / kvm_sregs).  We build our own VM from
 *	them and do the least a Host must do for the hypercalls that Guest
 *	makes: FLUSH_ASYNC is a no-op, SEND_DMA to key 0 is a lap marker (we set
 *	used_len so the Guest carries on), CRASH ends the run.  A kvm-pvm exit
 *	costs KVM_GET_REGS and KVM_SET_REGS.  With "sregs" we also do
 *	KVM_GET_SREGS, as the Python Host does (it needs the Guest's cs to know
 *	the privilege level): then the ioctls per round trip are exactly the
 *	Python Host's.  With "sync" we do no register ioctl at all: KVM copies
 *	regs and sregs into kvm_run on every exit and takes the changed regs
 *	back on entry (KVM_CAP_SYNC_REGS).
 *
 *	lguest-bench's Guests (lguest_bench/guests/bench.c) need a little more,
 *	named after the variant: mark=KEY (the lap markers' key, 0 above),
 *	dma=KEY (SEND_DMAs whose first section we copy out, as dma-out wants),
 *	data=GPA status=OFF calls=OFF next=I (lguest_data, the offsets of its
 *	hcall_status and hcalls, and the ring slot to look at next: we drain
 *	the async ring on every exit, and it may only hold FLUSH_ASYNC), and
 *	count=0 (no check of the number of hypercalls).  A #GP on `inb $imm8`
 *	(pio) reads 0xFF, as the Python Host's emulation does.
 *
 *	Shadow paging's two hypercalls (pte-update, context-switch) need the
 *	Python Host's shadow roots, which live in the Host slot we copied but
 *	whose bookkeeping does not: root=CR3:PML4 names each root (the Guest's
 *	page directory and the shadow's top level), cr3=PML4 the one loaded,
 *	pte=CR3:VADDR:INDEX the 64-bit word of the Host slot that shadows VADDR
 *	in CR3's root, and pfns=N the Guest pages a PTE may point at.
 *	NEW_PGTABLE switches to a known root (on kvm-pvm by handing KVM the new
 *	cr3 with the exit's sregs, on hardware KVM by the frame's cr3 request),
 *	SET_PTE rewrites a known entry as page_tables.py does; a directory or
 *	an entry we were not told of ends the run: it would need a real Host.
 *
 * Output, one line: "laps_ns=a,b,... hcalls=H internal_exits=I io_exits=O
 * ... ptes=P switches=S crash=MESSAGE".  Anything unexpected ends the
 * program with status 2 and a message on stderr: a benchmark that quietly
 * measured something else would be worse than none. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HOST_BASE		0x100000000ULL
#define SWITCHER_PORT		0x4C
#define OUT_PORT		0x10
#define LGUEST_TRAP_ENTRY	0x1F
#define TRAP_IN_SWITCHER	256
#define LHCALL_FLUSH_ASYNC	0
#define LHCALL_LGUEST_INIT	1
#define LHCALL_CRASH		2
#define LHCALL_NEW_PGTABLE	4
#define LHCALL_SEND_DMA		13
#define LHCALL_SET_PTE		14
#define MAX_ROOTS		8
#define PTE_A			0x20
#define PTE_D			0x40
#define PTE_RW			0x2
#define LHCALL_RING_SIZE	64
#define MAX_LAPS		64

/* lguest_kvm/switcher.py's Frame, 64-bit words in the same order. */
struct frame {
	uint64_t cr3_req, cr0_req, cr2, gs, fs, es, ds;
	uint64_t edi, esi, ebp, ebx, edx, ecx, eax;
	uint64_t trapnum, errcode, eip, cs, eflags, esp, ss;
};

static int kvm_fd, vm_fd, vcpu_fd;
static struct kvm_run *run;
static uint8_t *ram;
static size_t ram_size;
static uint32_t page_offset;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("hcall_driver: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void xioctl(int fd, unsigned long req, void *arg, const char *name)
{
	if (ioctl(fd, req, arg) < 0)
		die("%s: %s", name, strerror(errno));
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *anon(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap %zu bytes: %s", size, strerror(errno));
	return p;
}

/* The whole of DIR/name into fresh page-aligned memory; *size is its length. */
static void *load(const char *dir, const char *name, size_t *size)
{
	char path[4096];
	struct stat st;
	size_t done = 0;
	uint8_t *p;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0)
		die("%s: %s", path, strerror(errno));
	p = anon(st.st_size ? st.st_size : 1);
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, p + done, st.st_size - done);

		if (n <= 0)
			die("reading %s: %s", path, n ? strerror(errno) : "short file");
		done += n;
	}
	close(fd);
	*size = st.st_size;
	return p;
}

static void load_exact(const char *dir, const char *name, void *dst, size_t size)
{
	size_t got;
	void *p = load(dir, name, &got);

	if (got != size)
		die("%s/%s: %zu bytes, expected %zu", dir, name, got, size);
	memcpy(dst, p, size);
	munmap(p, got);
}

static void create_vm(void)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[256];
	} cpuid;
	int mmap_size;

	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		die("/dev/kvm: %s", strerror(errno));
	vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	if (vm_fd < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	vcpu_fd = ioctl(vm_fd, KVM_CREATE_VCPU, 0);
	if (vcpu_fd < 0)
		die("KVM_CREATE_VCPU: %s", strerror(errno));
	mmap_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < 0)
		die("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
	run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run: %s", strerror(errno));
	/* The Python Host sets exactly what KVM supports (kvm.py, VM.__init__). */
	memset(&cpuid, 0, sizeof(cpuid));
	cpuid.c.nent = 256;
	xioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, &cpuid, "KVM_GET_SUPPORTED_CPUID");
	xioctl(vcpu_fd, KVM_SET_CPUID2, &cpuid, "KVM_SET_CPUID2");
}

static void add_slot(int slot, uint64_t gpa, void *mem, size_t size)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)mem,
	};

	xioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r, "KVM_SET_USER_MEMORY_REGION");
}

static int64_t in_run_ns;		/* time spent inside KVM_RUN, all laps */
static long run_calls;

static void kvm_run_once(void)
{
	int64_t t = now_ns();

	while (ioctl(vcpu_fd, KVM_RUN, 0) < 0) {
		if (errno != EINTR && errno != EAGAIN)
			die("KVM_RUN: %s", strerror(errno));
	}
	in_run_ns += now_ns() - t;
	run_calls++;
}

static void print_laps(const int64_t *laps, int n)
{
	printf("laps_ns=");
	for (int i = 0; i < n; i++)
		printf("%s%lld", i ? "," : "", (long long)laps[i]);
}

/* The floor: KVM_RUN round trips of an `out` in an unpaged real-mode VM. */
static int raw_out(long n, int nlaps)
{
	static const uint8_t code[] = { 0xE6, OUT_PORT, 0xEB, 0xFC };	/* 1: out %al,$0x10; jmp 1b */
	int64_t laps[MAX_LAPS], t;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	uint8_t *mem = anon(0x10000);

	memcpy(mem + 0x1000, code, sizeof(code));
	create_vm();
	add_slot(0, 0, mem, 0x10000);
	xioctl(vcpu_fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	xioctl(vcpu_fd, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0x1000;
	regs.rflags = 0x2;
	xioctl(vcpu_fd, KVM_SET_REGS, &regs, "KVM_SET_REGS");
	for (int lap = -1; lap < nlaps; lap++) {	/* lap -1 warms up */
		t = now_ns();
		for (long i = 0; i < n; i++) {
			kvm_run_once();
			if (run->exit_reason != KVM_EXIT_IO || run->io.port != OUT_PORT)
				die("raw loop: exit %u (port %#x)", run->exit_reason,
				    run->io.port);
		}
		if (lap >= 0)
			laps[lap] = now_ns() - t;
	}
	print_laps(laps, nlaps);
	printf(" ops=%ld\n", n);
	return 0;
}

/* One vCPU ioctl that does not run the vCPU: what a register access costs. */
static int vcpu_ioctl(long n, int nlaps)
{
	int64_t laps[MAX_LAPS], t;
	struct kvm_regs regs;

	create_vm();
	for (int lap = -1; lap < nlaps; lap++) {
		t = now_ns();
		for (long i = 0; i < n; i++)
			xioctl(vcpu_fd, KVM_GET_REGS, &regs, "KVM_GET_REGS");
		if (lap >= 0)
			laps[lap] = now_ns() - t;
	}
	print_laps(laps, nlaps);
	printf(" ops=%ld\n", n);
	return 0;
}

/* The Guest driver's state. */
static long hcalls, internal_exits, io_exits, markers, async_calls, pios;
static uint32_t mark_key, dma_key = 1, data_gpa, status_off, calls_off, next_call;
static int check_count = 1;
static uint8_t sink[4096];
static int nlaps;
static int64_t laps[MAX_LAPS], lap_start;
static char crash[128];
static int crashed;
static long ptes, switches;
static struct { uint32_t cr3; uint64_t pml4; } roots[MAX_ROOTS];
static struct { uint32_t cr3, vaddr; uint64_t index; } pte_at[MAX_ROOTS];
static int nroots, npte;
static uint64_t cur_pml4, new_pml4;	/* new_pml4: hardware KVM loads it on the next entry */
static uint64_t loaded_pml4;		/* kvm-pvm: the cr3 KVM has */
static uint32_t pfns;
static uint64_t *host_q;
static size_t host_words;

static uint8_t *guest_phys(uint32_t gpa, uint32_t len)
{
	if ((uint64_t)gpa + len > ram_size)
		die("Guest address %#x+%u outside RAM", gpa, len);
	return ram + gpa;
}

/* What the benchmark Guest asks: the least a Host must do for it. */
static void do_hcall(uint32_t call, uint32_t a1, uint32_t a2, uint32_t a3)
{
	hcalls++;
	switch (call) {
	case LHCALL_FLUSH_ASYNC:
	case LHCALL_LGUEST_INIT:	/* already done by the Python Host before the dump */
		break;
	case LHCALL_SEND_DMA: {
		uint32_t dma[1 + 16], used = 0;
		uint16_t len[16];
		int64_t t = now_ns();

		if (a1 != mark_key && a1 != dma_key)
			die("SEND_DMA to key %#x, not the marker's", a1);
		memcpy(dma, guest_phys(a2, 100), 68);
		memcpy(len, guest_phys(a2, 100) + 68, sizeof(len));
		if (a1 == dma_key) {		/* dma-out: the device takes the first section */
			used = len[0] <= sizeof(sink) ? len[0] : sizeof(sink);
			memcpy(sink, guest_phys(dma[1], used), used);
			memcpy(guest_phys(a2, 4), &used, 4);
			break;
		}
		for (int i = 0; i < 16 && len[i]; i++)
			used += len[i];
		memcpy(guest_phys(a2, 4), &used, 4);
		if (markers >= nlaps)
			die("more lap markers than laps");
		laps[markers++] = t - lap_start;
		lap_start = now_ns();
		break;
	}
	case LHCALL_NEW_PGTABLE: {	/* page_tables.py new_pgtable(), for a root it has */
		int i;

		for (i = 0; i < nroots && roots[i].cr3 != a1; i++)
			;
		if (i == nroots)
			die("NEW_PGTABLE to %#x, a directory with no shadow root yet", a1);
		if (roots[i].pml4 != cur_pml4)
			new_pml4 = cur_pml4 = roots[i].pml4;
		switches++;
		break;
	}
	case LHCALL_SET_PTE: {		/* page_tables.py set_pte(), for an entry it has */
		uint32_t gpte = a3;
		int i;

		for (i = 0; i < npte && !(pte_at[i].cr3 == a1 && pte_at[i].vaddr >> 12 == a2 >> 12); i++)
			;
		if (i == npte)
			die("SET_PTE of %#x in %#x, an entry with no shadow", a2, a1);
		if (gpte & (PTE_A | PTE_D)) {
			uint64_t flags = gpte & 0xFFF & ~0x100;		/* not global */

			if (gpte & (0x8 | 0x80) || gpte >> 12 >= pfns)
				die("SET_PTE %#x: the Python Host would kill this Guest", gpte);
			if (!(gpte & PTE_D))
				flags &= ~PTE_RW;
			host_q[pte_at[i].index] = (gpte & 0xFFFFF000) | flags;
		} else {
			host_q[pte_at[i].index] = 0;
		}
		new_pml4 = cur_pml4;		/* the TLB must forget the old entry */
		ptes++;
		break;
	}
	case LHCALL_CRASH:
		for (unsigned i = 0; i < sizeof(crash) - 1; i++) {
			crash[i] = *guest_phys(a1 + i, 1);
			if (!crash[i])
				break;
		}
		crashed = 1;
		break;
	default:
		die("unexpected hypercall %u", call);
	}
}

/* The async ring, on every exit as the Host drains it: FLUSH_ASYNC calls only, marked done. */
static void drain_async(void)
{
	uint8_t *status;

	if (!data_gpa)
		return;
	status = guest_phys(data_gpa + status_off, LHCALL_RING_SIZE);
	while (status[next_call] != 0xFF) {
		uint32_t call;

		memcpy(&call, guest_phys(data_gpa + calls_off + 16 * next_call, 4), 4);
		if (call != LHCALL_FLUSH_ASYNC)
			die("async hypercall %u, not FLUSH_ASYNC", call);
		async_calls++;
		status[next_call] = 0xFF;
		next_call = (next_call + 1) % LHCALL_RING_SIZE;
	}
}

/* A #GP: the Guest kernel's `inb $imm8,%al`, which reads 0xFF from a port nobody has. */
static void do_gp(struct frame *f)
{
	uint8_t *insn = guest_phys((uint32_t)f->eip - page_offset, 2);

	if (f->errcode != 0 || insn[0] != 0xE4)
		die("#GP (%#llx) at %#llx on %02x: not an inb this driver knows",
		    (unsigned long long)f->errcode, (unsigned long long)f->eip, insn[0]);
	f->eax |= 0xFF;
	f->eip += 2;
	pios++;
}

static void option(const char *arg)
{
	const char *eq = strchr(arg, '=');
	unsigned long v;

	if (!eq)
		die("option %s is not NAME=VALUE", arg);
	v = strtoul(eq + 1, NULL, 0);
	if (!strncmp(arg, "mark=", 5))
		mark_key = v;
	else if (!strncmp(arg, "dma=", 4))
		dma_key = v;
	else if (!strncmp(arg, "data=", 5))
		data_gpa = v;
	else if (!strncmp(arg, "status=", 7))
		status_off = v;
	else if (!strncmp(arg, "calls=", 6))
		calls_off = v;
	else if (!strncmp(arg, "next=", 5))
		next_call = v % LHCALL_RING_SIZE;
	else if (!strncmp(arg, "count=", 6))
		check_count = v;
	else if (!strncmp(arg, "root=", 5)) {
		char *end;

		if (nroots == MAX_ROOTS)
			die("too many roots");
		roots[nroots].cr3 = strtoul(arg + 5, &end, 0);
		if (*end != ':')
			die("root=%s is not CR3:PML4", arg + 5);
		roots[nroots++].pml4 = strtoull(end + 1, NULL, 0);
	} else if (!strncmp(arg, "pte=", 4)) {
		char *end, *end2;

		if (npte == MAX_ROOTS)
			die("too many pte=");
		pte_at[npte].cr3 = strtoul(arg + 4, &end, 0);
		if (*end != ':')
			die("pte=%s is not CR3:VADDR:INDEX", arg + 4);
		pte_at[npte].vaddr = strtoul(end + 1, &end2, 0);
		if (*end2 != ':')
			die("pte=%s is not CR3:VADDR:INDEX", arg + 4);
		pte_at[npte++].index = strtoull(end2 + 1, NULL, 0);
	} else if (!strncmp(arg, "cr3=", 4))
		cur_pml4 = loaded_pml4 = strtoull(arg + 4, NULL, 0);
	else if (!strncmp(arg, "pfns=", 5))
		pfns = v;
	else
		die("unknown option %s", arg);
}

static int guest(int argc, char **argv, long n)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct frame *f;
	uint8_t *host;
	size_t host_size;
	const char *dir = argv[2];
	unsigned long frame_offset = strtoul(argv[6], NULL, 0);
	const char *variant = argc > 8 ? argv[8] : "min";
	int with_sregs = !strcmp(variant, "sregs"), sync = !strcmp(variant, "sync");

	for (int i = 9; i < argc; i++)
		option(argv[i]);
	page_offset = strtoul(argv[5], NULL, 0);
	if (strtoul(argv[7], NULL, 0) != sizeof(struct frame))
		die("frame size %s, this driver knows %zu", argv[7], sizeof(struct frame));
	ram = load(dir, "ram.bin", &ram_size);
	host = load(dir, "host.bin", &host_size);
	if (frame_offset + sizeof(struct frame) > host_size)
		die("frame outside the Host slot");
	f = (struct frame *)(host + frame_offset);
	host_q = (uint64_t *)host;
	host_words = host_size / 8;
	for (int i = 0; i < npte; i++)
		if (pte_at[i].index >= host_words)
			die("pte= index %#llx outside the Host slot", (unsigned long long)pte_at[i].index);
	create_vm();
	add_slot(0, 0, ram, ram_size);
	add_slot(1, HOST_BASE, host, host_size);
	load_exact(dir, "sregs.bin", &sregs, sizeof(sregs));
	load_exact(dir, "regs.bin", &regs, sizeof(regs));
	xioctl(vcpu_fd, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
	xioctl(vcpu_fd, KVM_SET_REGS, &regs, "KVM_SET_REGS");
	if (!with_sregs && !sync && strcmp(variant, "min"))
		die("unknown variant %s", variant);
	if (sync) {
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS) <= 0)
			die("no KVM_CAP_SYNC_REGS");
		run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
	}

	lap_start = now_ns();
	while (!crashed) {
		kvm_run_once();
		drain_async();
		if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
			/* kvm-pvm: the emulator refused `int $0x1f`; the vCPU sits on
			 * it with the Guest's own registers. */
			uint32_t eip;
			uint8_t *insn;
			struct kvm_regs *r = sync ? &run->s.regs.regs : &regs;

			internal_exits++;
			if (run->internal.suberror != KVM_INTERNAL_ERROR_EMULATION)
				die("internal error, suberror %u", run->internal.suberror);
			if (!sync)
				xioctl(vcpu_fd, KVM_GET_REGS, &regs, "KVM_GET_REGS");
			if (with_sregs)
				xioctl(vcpu_fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
			if ((with_sregs && (sregs.cs.selector & 3) != 1) ||
			    (sync && (run->s.regs.sregs.cs.selector & 3) != 1))
				die("emulation failure outside the Guest kernel");
			eip = (uint32_t)r->rip;
			insn = guest_phys(eip - page_offset, 2);
			if (insn[0] != 0xCD || insn[1] != LGUEST_TRAP_ENTRY)
				die("emulation failure at %#x on %02x %02x, not int $0x1f",
				    eip, insn[0], insn[1]);
			r->rip = (uint32_t)(eip + 2);
			do_hcall((uint32_t)r->rax, (uint32_t)r->rdx, (uint32_t)r->rbx, (uint32_t)r->rcx);
			new_pml4 = 0;		/* kvm-pvm walks the tables afresh: no flush */
			if (sync) {
				run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
				if (cur_pml4 != loaded_pml4) {
					run->s.regs.sregs.cr3 = loaded_pml4 = cur_pml4;
					run->kvm_dirty_regs |= KVM_SYNC_X86_SREGS;
				}
			} else {
				xioctl(vcpu_fd, KVM_SET_REGS, &regs, "KVM_SET_REGS");
				if (cur_pml4 != loaded_pml4) {
					xioctl(vcpu_fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
					sregs.cr3 = loaded_pml4 = cur_pml4;
					xioctl(vcpu_fd, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
				}
			}
		} else if (run->exit_reason == KVM_EXIT_IO && run->io.port == SWITCHER_PORT) {
			/* Hardware KVM: gate 0x1F fired and the Switcher saved the
			 * frame; the next KVM_RUN resumes the Guest from it. */
			io_exits++;
			if (f->trapnum == TRAP_IN_SWITCHER && io_exits == 1)
				/* Hardware KVM completes an `out` only on the next KVM_RUN, so
				 * a snapshot taken after the Switcher's exit sits on that `out`
				 * and our first entry repeats it, with nothing trapped. */
				continue;
			if (f->trapnum == 13)
				do_gp(f);
			else if (f->trapnum == LGUEST_TRAP_ENTRY)
				do_hcall((uint32_t)f->eax, (uint32_t)f->edx, (uint32_t)f->ebx,
					 (uint32_t)f->ecx);
			else
				die("trap %llu at %#llx (%#llx): the Guest needs a real Host",
				    (unsigned long long)f->trapnum, (unsigned long long)f->eip,
				    (unsigned long long)f->errcode);
			f->trapnum = TRAP_IN_SWITCHER;
			if (new_pml4) {			/* core.py: a shadow change reloads cr3 */
				f->cr3_req = new_pml4;
				new_pml4 = 0;
			}
		} else {
			die("unexpected exit %u", run->exit_reason);
		}
	}
	if (markers != nlaps)
		die("%ld lap markers, expected %d", markers, nlaps);
	if (check_count && hcalls != (long)nlaps * (n + 1) + 1)
		die("%ld hypercalls, expected %ld", hcalls, (long)nlaps * (n + 1) + 1);
	print_laps(laps, nlaps);
	printf(" hcalls=%ld internal_exits=%ld io_exits=%ld in_run_ns=%lld run_calls=%ld async=%ld "
	       "pios=%ld ptes=%ld switches=%ld crash=%s\n", hcalls, internal_exits, io_exits,
	       (long long)in_run_ns, run_calls, async_calls, pios, ptes, switches, crash);
	return 0;
}

int main(int argc, char **argv)
{
	long n;

	if (argc < 4)
		die("usage: hcall_driver out|ioctl N LAPS | guest DIR N LAPS PAGE_OFFSET FRAME_OFFSET FRAME_SIZE [min|sregs|sync] [NAME=VALUE...]");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[1], "out") || !strcmp(argv[1], "ioctl")) {
		n = strtol(argv[2], NULL, 0);
		nlaps = atoi(argv[3]);
		if (n <= 0 || nlaps <= 0 || nlaps > MAX_LAPS)
			die("bad N or LAPS");
		return argv[1][0] == 'o' ? raw_out(n, nlaps) : vcpu_ioctl(n, nlaps);
	}
	if (!strcmp(argv[1], "guest") && argc >= 8) {
		n = strtol(argv[3], NULL, 0);
		nlaps = atoi(argv[4]);
		if (n < 0 || nlaps <= 0 || nlaps > MAX_LAPS)
			die("bad N or LAPS");
		return guest(argc, argv, n);
	}
	die("unknown mode %s", argv[1]);
}
