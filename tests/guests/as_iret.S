/* Hand-built iret frames at privilege level 1 (test_assist.py). */
#include "lguest.h"

	.text
/* unsigned iret_flags(unsigned eflags): iret to the next instruction with
 * these flags in the frame; answer the flags the CPU then has.  iret_esp_delta
 * is how far %esp ended from where it started (0: all three words popped). */
	.globl iret_flags, at_iret_flags
iret_flags:
	movl	4(%esp), %eax
	movl	%esp, %ecx
	pushl	%eax
	pushl	$__KERNEL_CS
	pushl	$1f
at_iret_flags:
	iret
	ud2
1:	pushfl
	popl	%eax
	cld
	subl	%esp, %ecx
	movl	%ecx, iret_esp_delta
	ret

/* int iret_to(unsigned cs): iret to the next instruction through code
 * segment cs; 1 if we got there (iret_cs then holds %cs, and we come back to
 * __KERNEL_CS with an lret), 0 if the #GP/#NP handler sent us to
 * iret_recover, which drops the frame. */
	.globl iret_to, at_iret_to, iret_recover
iret_to:
	movl	4(%esp), %eax
	pushfl
	pushl	%eax
	pushl	$1f
at_iret_to:
	iret
	ud2
1:	movl	%cs, %eax
	movl	%eax, iret_cs
	pushl	$__KERNEL_CS
	pushl	$2f
	lret
2:	movl	$1, %eax
	ret
iret_recover:
	addl	$12, %esp
	xorl	%eax, %eax
	ret

/* unsigned iret_based_ss(void): move to the stack segment of GDT entry 22,
 * whose base puts %esp = 0x9000 at the top of bstack (as_iret.c), iret there
 * with ZF, SF and CF in the frame, and come back; answer the flags after the
 * iret.  based_esp is %esp right after it.  Nothing may trap in between: the
 * Host builds trap frames at %esp as a linear-map address. */
	.globl iret_based_ss, at_iret_based
iret_based_ss:
	pushl	%ebx
	movl	%esp, %ebx
	movl	%ss, %ecx
	movl	$(22 << 3 | 1), %edx
	movl	$0x9000, %eax
	movl	%edx, %ss
	movl	%eax, %esp
	pushl	$0x2C3
	pushl	$__KERNEL_CS
	pushl	$1f
at_iret_based:
	iret
	ud2
1:	movl	%esp, based_esp
	pushfl
	popl	%eax
	movl	%ecx, %ss
	movl	%ebx, %esp
	popl	%ebx
	ret

	.data
	.globl iret_esp_delta, iret_cs, based_esp
based_esp:	.long 0
iret_esp_delta:	.long 0
iret_cs:	.long 0

	.section .note.GNU-stack, "", @progbits
