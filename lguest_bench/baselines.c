/* lguest-bench's native baselines, built in the run with the system gcc.
 *   baselines exit N            KVM_RUN round trips of a real-mode `out` loop: the floor of an exit
 *   baselines syscall N         getppid() system calls on this host
 *   baselines pagefault N       first-touch page faults on fresh anonymous memory
 *   baselines cow N             copy-on-write faults: stores to a file's pages mapped MAP_PRIVATE
 *   baselines memlin MB LAPS    one store per 64-byte line through MB of memory, LAPS times
 *   baselines memrand MB LAPS   the same number of stores at pseudo-random lines
 *   baselines kick N            another thread signals a vCPU thread out of KVM_RUN (the path of
 *                               LHREQ_BREAK and of every kick): median from signal to EINTR
 *   baselines timer N DELAY_NS  a POSIX timer waking a thread in sigtimedwait() (how the Host
 *                               sleeps through HALT): median lateness, then its 99th percentile
 * Each prints one number: nanoseconds per operation (per lap for memlin/memrand). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
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

/* A vCPU in real mode at 0x1000 running `code`: the smallest VM there is. */
static int real_mode_vm(const unsigned char *code, size_t len, int *vcpu_out, struct kvm_run **run_out)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return die("KVM_CREATE_VM");
	unsigned char *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	memcpy(mem, code, len);
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
	*vcpu_out = vcpu;
	*run_out = run;
	return 0;
}

static int kvm_exit(long n)
{
	const unsigned char code[] = { 0xe6, 0x10, 0xeb, 0xfc };	/* 1: out %al,$0x10; jmp 1b */
	int vcpu;
	struct kvm_run *run;
	if (real_mode_vm(code, sizeof(code), &vcpu, &run))
		return 1;
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

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The kick: the vCPU spins in real mode (`jmp .`); the other thread waits a moment so that it is
 * back in the Guest, notes the time and signals it; the vCPU thread notes when KVM_RUN came back
 * with EINTR.  This is what LHREQ_BREAK, a timer or another Guest's DMA costs before any of the
 * Host's own work. */
static volatile double kick_sent;
static volatile long kick_done;
static pthread_t vcpu_thread;

static void on_kick(int sig)
{
	(void)sig;
}

static void *kicker(void *arg)
{
	long n = *(long *)arg;
	for (long i = 0; i < n; i++) {
		while (kick_done != i)
			;
		usleep(200);
		kick_sent = now_ns();
		pthread_kill(vcpu_thread, SIGUSR1);
		while (kick_done == i)
			;
	}
	return NULL;
}

static int kvm_kick(long n)
{
	const unsigned char spin[] = { 0xeb, 0xfe };			/* 1: jmp 1b */
	int vcpu;
	struct kvm_run *run;
	if (n < 1 || real_mode_vm(spin, sizeof(spin), &vcpu, &run))
		return 1;
	struct sigaction sa = { .sa_handler = on_kick };
	sigaction(SIGUSR1, &sa, NULL);
	double *lat = calloc(n, sizeof(double));
	pthread_t t;
	vcpu_thread = pthread_self();
	pthread_create(&t, NULL, kicker, &n);
	for (long i = 0; i < n;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno != EINTR)
				return die("KVM_RUN");
			lat[i] = now_ns() - kick_sent;
			kick_done = ++i;
		}
	}
	pthread_join(t, NULL);
	qsort(lat, n, sizeof(double), cmp_double);
	printf("%.1f\n", lat[n / 2]);
	return 0;
}

/* The timer: a POSIX timer at an absolute CLOCK_MONOTONIC deadline signalling this very thread,
 * which waits in sigtimedwait() in 50 ms slices, as the Host's HALT does. */
static int timer_late(long n, long delay_ns)
{
	if (n < 1)
		return 1;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGRTMIN);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	struct sigevent ev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN };
	ev._sigev_un._tid = syscall(SYS_gettid);
	timer_t tm;
	if (timer_create(CLOCK_MONOTONIC, &ev, &tm) < 0)
		return die("timer_create");
	double *late = calloc(n, sizeof(double));
	for (long i = 0; i < n; i++) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long deadline = now.tv_sec * 1000000000LL + now.tv_nsec + delay_ns;
		struct itimerspec its = { .it_value = { deadline / 1000000000LL, deadline % 1000000000LL } };
		if (timer_settime(tm, TIMER_ABSTIME, &its, NULL) < 0)
			return die("timer_settime");
		struct timespec slice = { 0, 50000000 };
		while (sigtimedwait(&set, NULL, &slice) < 0)
			;
		late[i] = now_ns() - (double)deadline;
	}
	qsort(late, n, sizeof(double), cmp_double);
	printf("%.1f %.1f\n", late[n / 2], late[(n * 99) / 100]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return fprintf(stderr, "usage: baselines exit|syscall|pagefault|cow|memlin|memrand N [LAPS]\n"), 2;
	long n = atol(argv[2]);
	if (!strcmp(argv[1], "exit"))
		return kvm_exit(n);
	if (!strcmp(argv[1], "kick"))
		return kvm_kick(n);
	if (!strcmp(argv[1], "timer"))
		return timer_late(n, argc > 3 ? atol(argv[3]) : 1000000);
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
