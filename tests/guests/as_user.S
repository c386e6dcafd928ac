/* Kernel-to-user iret and the user code for test_assist.py's user-mode test.
 * The user code and stack live in the kernel's linear map, which the
 * Launcher's initial page tables map with the User bit, so CPL 3 may use
 * them.  Every user_* label below is an instruction that traps to the
 * kernel's #GP handler (as_user.c), which prints the frame and moves the user
 * on past the instruction. */
#include "lguest.h"

#define USER_CS	0x73
#define USER_DS	0x7B

	.text
/* enter_user(eip, esp, eflags): build the CPU's frame for a return to
 * privilege level 3 (eip, cs, eflags, esp, ss) and iret to it. */
	.globl enter_user
enter_user:
	movl	4(%esp), %eax
	movl	8(%esp), %ecx
	movl	12(%esp), %edx
	pushl	$USER_DS
	pushl	%ecx
	pushl	%edx
	pushl	$USER_CS
	pushl	%eax
	iret

	.globl user_entry, user_int80, user_hcall, user_int3, user_cli
	.globl user_ljmp_kernel, user_lret_kernel, user_iret_kernel
	.globl user_callee, user_after_lcall, user_after_iret, user_done
	.globl user_ljmp_ok, user_lcall_esp, user_callee_esp
user_entry:
	movl	%ds, %ebx		/* what the iret left in %ds: null */
	movl	%cs, %ecx
	movl	%ss, %edx
	movl	$USER_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	$0x1234, user_flag
	movl	%esp, %esi
	stc
user_int80:
	int	$0x80			/* no 0x80 gate: #GP(0x402) */
	movl	$LHCALL_CRASH, %eax
user_hcall:
	int	$LGUEST_TRAP_ENTRY	/* a DPL 1 gate: #GP(0xFA) from user mode */
user_int3:
	int3				/* #GP(0x1A) */
user_cli:
	cli				/* IOPL is 0, whatever the iret frame said: #GP(0) */
user_ljmp_kernel:
	ljmp	$__KERNEL_CS, $1f	/* into ring 1: #GP(0x60) */
	jmp	2f
1:	ud2
2:	pushl	$__KERNEL_CS
	pushl	$1b
user_lret_kernel:
	lret				/* a return to an inner ring: #GP(0x60) */
	addl	$8, %esp
	pushfl
	pushl	$__KERNEL_CS
	pushl	$1b
user_iret_kernel:
	iret				/* the same with iret: #GP(0x60) */
	addl	$12, %esp
	/* Far transfers within ring 3 work. */
	ljmp	$USER_CS, $user_ljmp_ok
	ud2
user_ljmp_ok:
	movl	%esp, user_lcall_esp
	lcall	$USER_CS, $user_callee
user_after_lcall:
	/* An iret within ring 3; the new flags have ZF and SF but not CF. */
	stc
	pushl	$0x2C2
	pushl	$USER_CS
	pushl	$user_after_iret
	iret
	ud2
user_after_iret:
	movl	%cs, %ecx
	movl	%esp, %esi
user_done:
	int	$0x80
	ud2

/* Called with lcall: note where the return address went, and lret. */
user_callee:
	movl	%esp, user_callee_esp
	movl	(%esp), %eax
	movl	%eax, user_callee_ret
	movl	4(%esp), %eax
	movl	%eax, user_callee_cs
	lret

	.data
	.globl user_callee_ret, user_callee_cs
user_lcall_esp:		.long 0
user_callee_esp:	.long 0
user_callee_ret:	.long 0
user_callee_cs:		.long 0

	.section .note.GNU-stack, "", @progbits
