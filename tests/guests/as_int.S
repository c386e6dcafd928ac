/* Software interrupts at privilege level 1 (test_assist.py).  do_ints()
 * loads known values into the general registers and runs each `int` in turn;
 * the #GP handler in as_int.c prints the frame and steps over the
 * instruction.  The hypercall at the end must leave every register but %eax
 * as it was. */
#include "lguest.h"

	.text
	.globl do_ints, at_int30, at_int80, at_int3, at_int3cd, at_hcall
do_ints:
	pushl	%ebx
	pushl	%esi
	pushl	%edi
	pushl	%ebp
	movl	%esp, ints_esp
	movl	$0xA1A1A1A1, %eax
	movl	$0xB2B2B2B2, %ebx
	movl	$0xC3C3C3C3, %ecx
	movl	$0xD4D4D4D4, %edx
	movl	$0x5E5E5E5E, %esi
	movl	$0xD1D1D1D1, %edi
	movl	$0xBBBBBBBB, %ebp
at_int30:
	int	$0x30
at_int80:
	int	$0x80
at_int3:
	int3
at_int3cd:
	int	$3
	movl	$LHCALL_FLUSH_ASYNC, %eax
at_hcall:
	int	$LGUEST_TRAP_ENTRY
	movl	%eax, after_hcall + 0
	movl	%ebx, after_hcall + 4
	movl	%ecx, after_hcall + 8
	movl	%edx, after_hcall + 12
	movl	%esi, after_hcall + 16
	movl	%edi, after_hcall + 20
	movl	%ebp, after_hcall + 24
	movl	%esp, after_hcall + 28
	popl	%ebp
	popl	%edi
	popl	%esi
	popl	%ebx
	ret

/* into with the overflow flag set (#GP(0x22)) and clear (nothing), then icebp:
 * a debug trap with EIP after it, whatever the gates say. */
	.globl do_into, at_into, at_into_clear, at_icebp, after_icebp
do_into:
	movl	$0x7FFFFFFF, %eax
	addl	$1, %eax
at_into:
	into
	xorl	%eax, %eax
at_into_clear:
	into
at_icebp:
	.byte	0xF1
after_icebp:
	ret

	.data
	.globl ints_esp, after_hcall
ints_esp:	.long 0
after_hcall:	.fill 8, 4, 0

	.section .note.GNU-stack, "", @progbits
