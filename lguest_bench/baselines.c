/* lguest-bench's native baselines, built in the run with the system gcc.
 *   baselines exit N            KVM_RUN round trips of a real-mode `out` loop: the floor of an exit
 *   baselines syscall N         getppid() system calls on this host
 *   baselines pagefault N       first-touch page faults on fresh anonymous memory
 *   baselines cow N             copy-on-write faults: stores to a file's pages mapped MAP_PRIVATE
 *   baselines memlin MB LAPS    one store per 64-byte line through MB of memory, LAPS times
 *   baselines memrand MB LAPS   the same number of stores at pseudo-random lines
 * Each prints one number: nanoseconds per operation (per lap for memlin/memrand). */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int die(const char *what)
{
	perror(what);
	return 1;
}

/* A private mapping of a file's pages, each read first so that the page cache's own page is mapped,
 * read-only, as a fork leaves a page: the store then faults and the kernel copies the page for this
 * mapping alone.  Only the stores are timed; MADV_DONTNEED drops the copies between rounds. */
static int cow(long n)
{
	enum { PAGES = 256, SIZE = PAGES * 4096 };
	static char buf[4096];
	FILE *tmp = NULL;
	int fd = syscall(SYS_memfd_create, "lguest-bench-cow", 0);
	if (fd < 0) {
		if (!(tmp = tmpfile()))
			return die("memfd_create");
		fd = fileno(tmp);
	}
	memset(buf, 0xC5, sizeof(buf));
	for (int i = 0; i < PAGES; i++)
		if (write(fd, buf, sizeof(buf)) != sizeof(buf))
			return die("write");
	volatile char *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return die("mmap");
	volatile unsigned sum = 0;
	double total = 0;
	for (long done = -PAGES; done < n; done += PAGES) {	/* the first round warms up */
		long k = n - done < PAGES ? n - done : PAGES;
		for (long i = 0; i < k; i++)
			sum += p[i * 4096];
		double t = now_ns();
		for (long i = 0; i < k; i++)
			p[i * 4096 + 64] = 1;
		if (done >= 0)
			total += now_ns() - t;
		for (long i = 0; i < k; i++) {
			if (p[i * 4096 + 64] != 1 || p[i * 4096 + 65] != (char)0xC5)
				return fprintf(stderr, "baselines: the copy is wrong\n"), 1;
		}
		if (madvise((void *)p, SIZE, MADV_DONTNEED) < 0)
			return die("madvise");
	}
	if (pread(fd, buf, 128, 0) != 128 || buf[64] != (char)0xC5)
		return fprintf(stderr, "baselines: a store reached the file\n"), 1;
	printf("%.1f\n", total / n);
	return 0;
}

static int kvm_exit(long n)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return die("KVM_CREATE_VM");
	unsigned char *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	const unsigned char code[] = { 0xe6, 0x10, 0xeb, 0xfc };	/* 1: out %al,$0x10; jmp 1b */
	memcpy(mem, code, sizeof(code));
	struct kvm_userspace_memory_region r = { .slot = 0, .guest_phys_addr = 0x1000,
		.memory_size = 0x1000, .userspace_addr = (unsigned long)mem };
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return die("KVM_SET_USER_MEMORY_REGION");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return die("KVM_CREATE_VCPU");
	int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	struct kvm_sregs sregs;
	ioctl(vcpu, KVM_GET_SREGS, &sregs);
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	ioctl(vcpu, KVM_SET_SREGS, &sregs);
	struct kvm_regs regs = { .rip = 0x1000, .rflags = 2 };
	ioctl(vcpu, KVM_SET_REGS, &regs);
	for (int warm = 0; warm < 100; warm++)
		ioctl(vcpu, KVM_RUN, 0);
	double t = now_ns();
	for (long i = 0; i < n; i++) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0 || run->exit_reason != KVM_EXIT_IO)
			return die("KVM_RUN");
	}
	printf("%.1f\n", (now_ns() - t) / n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return fprintf(stderr, "usage: baselines exit|syscall|pagefault|cow|memlin|memrand N [LAPS]\n"), 2;
	long n = atol(argv[2]);
	if (!strcmp(argv[1], "exit"))
		return kvm_exit(n);
	if (!strcmp(argv[1], "syscall")) {
		double t = now_ns();
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		printf("%.1f\n", (now_ns() - t) / n);
		return 0;
	}
	if (!strcmp(argv[1], "cow"))
		return cow(n);
	if (!strcmp(argv[1], "pagefault")) {
		char *p = mmap(NULL, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return die("mmap");
		double t = now_ns();
		for (long i = 0; i < n; i++)
			p[i * 4096] = 1;
		printf("%.1f\n", (now_ns() - t) / n);
		return 0;
	}
	if (!strcmp(argv[1], "memlin") || !strcmp(argv[1], "memrand")) {
		long laps = argc > 3 ? atol(argv[3]) : 1;
		unsigned long words = (unsigned long)n << 18;		/* MB of 4-byte words */
		volatile unsigned *p = malloc(words * 4);
		memset((void *)p, 0, words * 4);
		double t = now_ns();
		for (long lap = 0; lap < laps; lap++) {
			if (argv[1][3] == 'l') {
				for (unsigned long off = 0; off < words; off += 16)
					p[off] = lap;
			} else {
				unsigned x = lap * 2654435761u + 1;
				for (unsigned long k = 0; k < words / 16; k++) {
					x = x * 1103515245u + 12345u;
					p[(x >> 4) & ((words - 1) & ~15ul)] = k;
				}
			}
		}
		printf("%.1f\n", (now_ns() - t) / laps);
		return 0;
	}
	return fprintf(stderr, "baselines: unknown %s\n", argv[1]), 2;
}
