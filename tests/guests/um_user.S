/* The user program of the user-mode test (test_usermode.py), and the kernel's
 * way into it.
 *
 * user_prog..user_prog_end is position-independent code that the kernel
 * copies into a page of its own and maps at UCODE with the User bit; it runs
 * at privilege level 3 and reaches the kernel only with `int $0x80` (and page
 * faults).  Every system call passes its own %esp in %esi and the address
 * just after its `int` in %edi, so the kernel can check the frame it got. */
#include "lguest.h"
#include "um_user.h"

#ifndef MODE
#define MODE 0
#endif

.macro SYSCALL
	call	91f
91:	popl	%edi
	addl	$(92f - 91b), %edi
	movl	%esp, %esi
	int	$0x80
92:
.endm

.macro CHECKPOINT tag
	movl	$SYS_CHECKPOINT, %eax
	movl	$\tag, %ebx
	SYSCALL
.endm

	.text
/* enter_user(eip, esp): the frame a return to privilege level 3 pops (eip,
 * cs, eflags with interrupts on, esp, ss), with the user's data segments
 * already loaded, and out through lguest_iret like any return from a trap. */
	.globl enter_user
enter_user:
	movl	4(%esp), %eax
	movl	8(%esp), %ecx
	movl	$USER_DS, %edx
	movl	%edx, %ds
	movl	%edx, %es
	pushl	$USER_DS
	pushl	%ecx
	pushl	$0x202
	pushl	$USER_CS
	pushl	%eax
	xorl	%eax, %eax
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	jmp	lguest_iret

	.section .rodata
	.globl user_prog, user_prog_end
user_prog:
	movl	$SYS_WRITE, %eax	/* write(42) */
	movl	$42, %ebx
	SYSCALL
	movl	$SYS_ADD, %eax		/* add(40000, 2345) */
	movl	$40000, %ebx
	movl	$2345, %ecx
	SYSCALL
	movl	%eax, %ebx		/* write(the sum) */
	movl	$SYS_WRITE, %eax
	SYSCALL

	/* A write to a page nobody has mapped, not even its page table. */
	movl	$0x5EED1234, UDATA
	movl	UDATA, %ebx
	movl	$UDATA, %ecx
	movl	$SYS_CHECK, %eax
	SYSCALL
	/* A read of the next page (same page table): the kernel fills it. */
	movl	UDATA + 0x1004, %ebx
	movl	$SYS_WRITE, %eax
	SYSCALL
	/* Writing the clean page now is the Host's business (Dirty bit). */
	movl	$0xA5A5F00D, UDATA + 0x1008
	movl	UDATA + 0x1008, %ebx
	movl	$(UDATA + 0x1008), %ecx
	movl	$SYS_CHECK, %eax
	SYSCALL

	/* Exits per system call: LOOP_N calls, then 2*LOOP_N, between checkpoints. */
	CHECKPOINT 1
	movl	$LOOP_N, %ebp
1:	movl	$SYS_NOP, %eax
	SYSCALL
	decl	%ebp
	jnz	1b
	CHECKPOINT 2
	movl	$(2 * LOOP_N), %ebp
1:	movl	$SYS_NOP, %eax
	SYSCALL
	decl	%ebp
	jnz	1b
	CHECKPOINT 3

#if MODE == 1
	/* The kernel's linear map is supervisor-only: reading it faults. */
	movl	PAGE_OFFSET + 0x100000, %ebx
	movl	$SYS_WRITE, %eax
	SYSCALL
#endif
	movl	$SYS_EXIT, %eax
	movl	$7, %ebx
	SYSCALL
	ud2
user_prog_end:

	.section .note.GNU-stack, "", @progbits
