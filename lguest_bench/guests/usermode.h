/*M:950 User mode for a benchmark Guest.  Two of the benchmarks must start in
 * a user program at privilege level 3, as a real system call or copy-on-write
 * fault does.  What that takes is little: a GDT with user code and data
 * segments (entries 14 and 15, DPL 3, loaded with LOAD_GDT beside the kernel's
 * own 12 and 13), a kernel stack for traps from level 3 (SET_STACK: the Host
 * switches to it as the CPU switches to the TSS's ss1:esp1), and a way in:
 * an iret whose frame holds the user's cs, eflags, esp and ss, through
 * lguest_iret like any return from a trap.  The user's pages are the
 * benchmark's business. :*/
#ifndef BENCH_USERMODE_H
#define BENCH_USERMODE_H

#include "lguest.h"

#define USER_CS		0x73		/* GDT 14, RPL 3 */
#define USER_DS		0x7B		/* GDT 15, RPL 3 */

static __attribute__((unused)) unsigned long user_gdt[32][2];
static __attribute__((unused)) char user_kstack[PAGE_SIZE] __attribute__((aligned(PAGE_SIZE)));

/* The user segments, and the kernel stack every trap from level 3 lands on. */
static inline void user_mode_setup(void)
{
	user_gdt[12][0] = 0x0000FFFF; user_gdt[12][1] = 0x00CFBB00;	/* kernel code, DPL 1 */
	user_gdt[13][0] = 0x0000FFFF; user_gdt[13][1] = 0x00CFB300;	/* kernel data, DPL 1 */
	user_gdt[14][0] = 0x0000FFFF; user_gdt[14][1] = 0x00CFFB00;	/* user code, DPL 3 */
	user_gdt[15][0] = 0x0000FFFF; user_gdt[15][1] = 0x00CFF300;	/* user data, DPL 3 */
	hcall(LHCALL_LOAD_GDT, __pa(user_gdt), 32, 0);
	hcall(LHCALL_SET_STACK, __KERNEL_DS, (unsigned long)user_kstack + PAGE_SIZE, 1);
}

/* Into the user program at eip with its stack at esp, interrupts on. */
static inline void __attribute__((noreturn)) enter_user(unsigned long eip, unsigned long esp)
{
	__asm__ __volatile__("movl %2, %%ds\n\t"
			     "movl %2, %%es\n\t"
			     "pushl %2\n\t"
			     "pushl %1\n\t"
			     "pushl $0x202\n\t"
			     "pushl %3\n\t"
			     "pushl %0\n\t"
			     "jmp lguest_iret"
			     : : "r"(eip), "r"(esp), "r"((unsigned long)USER_DS), "i"(USER_CS)
			     : "memory");
	__builtin_unreachable();
}

#endif
