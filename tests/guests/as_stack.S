/* A far return to user mode, and user-mode irets whose frames the CPU could
 * not read (test_assist.py, as_stack.c). */
#include "lguest.h"

#define USER_CS	0x73
#define USER_DS	0x7B

	.text
/* lret_to_user(eip, esp): a far return to ring 3 pops eip and cs, drops
 * the 4 bytes `lret $4` names, then pops esp and ss (and drops 4 bytes of the
 * user stack too). */
	.globl lret_to_user, at_lret_user
lret_to_user:
	movl	4(%esp), %eax
	movl	8(%esp), %ecx
	pushl	$USER_DS
	pushl	%ecx
	pushl	$0x5555AAAA
	pushl	$USER_CS
	pushl	%eax
at_lret_user:
	lret	$4

	.globl user_start, at_iret_kernel_page, at_iret_unmapped, user_resume, user_done
user_start:
	movl	%cs, %ebx
	movl	%ss, %edx
	movl	%esp, %esi
	movl	%ds, %edi		/* null: the kernel's data segment is not for ring 3 */
	movl	$USER_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	kernel_page_frame, %esp
at_iret_kernel_page:
	iret				/* a supervisor page: #PF(5) */
	ud2
user_resume:
	movl	unmapped_frame, %esp
at_iret_unmapped:
	iret				/* not mapped: #PF(4) */
	ud2
user_resume2:
user_done:
	int	$0x80
	ud2

	.data
	.globl kernel_page_frame, unmapped_frame
kernel_page_frame:	.long 0
unmapped_frame:		.long 0

	.section .note.GNU-stack, "", @progbits
