/* Far transfers at privilege level 1 (test_assist.py).  Each function
 * answers how far %esp ended from where it started (0 when the transfer
 * popped exactly what was pushed) and leaves %cs in far_cs on arrival. */
#include "lguest.h"

	.text
	.globl far_lret, far_lret_imm, far_ljmp, far_lcall, far_ljmp_rpl0, far_lcall_rpl0
	.globl far_callee, at_lcall_ret, at_lcall_rpl0_ret
far_lret:
	movl	%esp, %ecx
	pushl	$__KERNEL_CS
	pushl	$1f
	lret
	ud2
1:	jmp	far_done

far_lret_imm:				/* lret $8 drops two more words */
	movl	%esp, %ecx
	pushl	$0x11111111
	pushl	$0x22222222
	pushl	$__KERNEL_CS
	pushl	$1f
	lret	$8
	ud2
1:	jmp	far_done

far_ljmp:
	movl	%esp, %ecx
	ljmp	$__KERNEL_CS, $1f
	ud2
1:	jmp	far_done

far_ljmp_rpl0:				/* RPL 0 <= CPL: allowed, and %cs gets RPL 1 */
	movl	%esp, %ecx
	ljmp	$(__KERNEL_CS & ~3), $1f
	ud2
1:	jmp	far_done

far_lcall:
	movl	%esp, %ecx
	lcall	$__KERNEL_CS, $far_callee
at_lcall_ret:
	jmp	far_done

far_lcall_rpl0:
	movl	%esp, %ecx
	lcall	$(__KERNEL_CS & ~3), $far_callee
at_lcall_rpl0_ret:
	jmp	far_done

/* The callee notes its return address, the saved %cs and where they sit. */
far_callee:
	movl	%cs, %eax
	movl	%eax, far_cs
	movl	(%esp), %eax
	movl	%eax, callee_ret
	movl	4(%esp), %eax
	movl	%eax, callee_cs
	movl	%ecx, %eax
	subl	%esp, %eax
	movl	%eax, callee_depth
	lret

far_done:
	movl	%cs, %eax
	cmpl	$0, far_cs
	jne	1f
	movl	%eax, far_cs
1:	movl	%ecx, %eax
	subl	%esp, %eax
	ret

/* Bad targets: the #GP/#NP handler steps over each (7 bytes) and notes the
 * error code; none of them may move %esp. */
	.globl far_bad, bad_ljmp_data, bad_ljmp_user, bad_ljmp_user0, bad_ljmp_null
	.globl bad_lcall_data, bad_lcall_user, bad_ljmp_np, bad_ljmp_sys, bad_lret_rpl0
far_bad:
	movl	%esp, %ecx
bad_ljmp_data:
	ljmp	$__KERNEL_DS, $1f		/* a data segment: #GP(0x68) */
bad_ljmp_user:
	ljmp	$0x73, $1f			/* ring 3 code, RPL 3: #GP(0x70) */
bad_ljmp_user0:
	ljmp	$0x70, $1f			/* ring 3 code, RPL 0: #GP(0x70) */
bad_ljmp_null:
	ljmp	$0, $1f				/* #GP(0) */
bad_lcall_data:
	lcall	$__KERNEL_DS, $1f		/* #GP(0x68), nothing pushed */
bad_lcall_user:
	lcall	$0x73, $1f			/* #GP(0x70), nothing pushed */
bad_ljmp_np:
	ljmp	$(20 << 3 | 1), $1f		/* not present: #NP(0xA0) */
bad_ljmp_sys:
	ljmp	$(21 << 3 | 1), $1f		/* a system descriptor: #GP(0xA8) */
	pushl	$(__KERNEL_CS & ~3)
	pushl	$1f
bad_lret_rpl0:
	lret					/* back to an inner ring: #GP(0x60) */
	addl	$8, %esp
	movl	%ecx, %eax
	subl	%esp, %eax
	ret
1:	ud2

	.data
	.globl far_cs, callee_ret, callee_cs, callee_depth
far_cs:		.long 0
callee_ret:	.long 0
callee_cs:	.long 0
callee_depth:	.long 0

	.section .note.GNU-stack, "", @progbits
