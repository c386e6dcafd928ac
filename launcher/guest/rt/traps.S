/*G:100 Traps and interrupts, the Guest's side.  A Guest kernel keeps an IDT
 * like any other, but it cannot load it: it hands each entry to the Host with
 * LOAD_IDT_ENTRY, and the Host builds the CPU's frame on the Guest's stack
 * and jumps to the handler, just as the CPU would have.  Each vector here has
 * a little entry stub that makes every frame look the same (a zero where the
 * CPU pushes no error code, then the vector), saves the registers and calls
 * trap_dispatch() in C.  On the way out, lguest_iret puts the saved interrupt
 * flag back into lguest_data before the real iret. :*/
#include "lguest.h"

#define NOERR(n) .globl trap_entry_##n; trap_entry_##n: pushl $0; pushl $n; jmp trap_common;
#define ERR(n)   .globl trap_entry_##n; trap_entry_##n: pushl $n; jmp trap_common;

	.text
	.balign 16
NOERR(0)  NOERR(1)  NOERR(2)  NOERR(3)  NOERR(4)  NOERR(5)  NOERR(6)  NOERR(7)
ERR(8)    NOERR(9)  ERR(10)   ERR(11)   ERR(12)   ERR(13)   ERR(14)   NOERR(15)
NOERR(16) ERR(17)   NOERR(18) NOERR(19) NOERR(20) NOERR(21) NOERR(22) NOERR(23)
NOERR(24) NOERR(25) NOERR(26) NOERR(27) NOERR(28) NOERR(29) NOERR(30) NOERR(31)
NOERR(32) NOERR(33) NOERR(34) NOERR(35) NOERR(36) NOERR(37) NOERR(38) NOERR(39)
NOERR(40) NOERR(41) NOERR(42) NOERR(43) NOERR(44) NOERR(45) NOERR(46) NOERR(47)
NOERR(48) NOERR(49) NOERR(50) NOERR(51) NOERR(52) NOERR(53) NOERR(54) NOERR(55)
NOERR(56) NOERR(57) NOERR(58) NOERR(59) NOERR(60) NOERR(61) NOERR(62) NOERR(63)
NOERR(128)

trap_common:
	pushal
	pushl	%ds
	pushl	%es
	movl	$__KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	pushl	%esp
	call	trap_dispatch
	addl	$4, %esp
	popl	%es
	popl	%ds
	popal
	addl	$8, %esp
	jmp	lguest_iret

	.section .rodata
	.balign 4
	.globl trap_entries
trap_entries:
	.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.long trap_entry_\n
	.endr
	.irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
	.long trap_entry_\n
	.endr

	.section .note.GNU-stack, "", @progbits
