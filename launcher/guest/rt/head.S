/*G:010 Every Guest in this project is a tiny freestanding program in 32-bit
 * C and assembly, built to look exactly like what the 2.6.23 Launcher
 * loaded: a Linux kernel.  Like that kernel it is linked (guest.lds) to run
 * at virtual address 0xC0100000 but loaded at physical address 0x100000 (1
 * MB): every loadable segment's virtual address is its physical address plus
 * PAGE_OFFSET, 0xC0000000.  The Launcher reads that difference from the ELF
 * program headers and tells the Host; from then on both agree that the
 * Guest's virtual address v is Guest-physical v - PAGE_OFFSET, which is all
 * the __pa() and __va() macros in lguest.h do.
 *
 * This file holds the first instructions every Guest runs, and one more
 * routine, lguest_iret, that only makes sense once interrupts arrive. :*/
#include "lguest.h"

#define BOOT_STACK_SIZE	16384

/*G:012 A Guest image is found by a string, not by a header field: the
 * Launcher ignores the ELF entry point and searches the loaded kernel for
 * the letters "GenuineLguest".  Execution starts on the byte right after
 * them, so the string and the first instruction must be neighbours; the
 * linker script puts this section first in the image.
 *
 * What the Guest wakes up to: privilege level 1, 32-bit code segment 0x61,
 * data 0x69, no stack at all (%esp is 0), and page tables that map only
 * PAGE_OFFSET upwards onto physical memory, so every address we use must
 * be a virtual one above 0xC0000000.  %esi holds the physical address of
 * the boot parameters the Launcher wrote (0).
 *
 * We first clear .bss (the Launcher zero-filled memory, but a Guest should
 * not rely on that), then take a stack.  The stack lives in its own section
 * after .bss that nobody clears: zeroing 16 KiB one emulated store at a
 * time would be wasted work. */
	.section .text.head, "ax"
	.ascii "GenuineLguest"
	.globl lguest_entry
	.type lguest_entry, @function
lguest_entry:
	cld
	movl	$__bss_start, %edi
	movl	$__bss_end, %ecx
	subl	%edi, %ecx
	shrl	$2, %ecx		/* the linker script 4-aligns both ends */
	xorl	%eax, %eax
	rep stosl
	movl	$boot_stack_top, %esp
	leal	PAGE_OFFSET(%esi), %eax	/* boot params: physical to virtual */
	pushl	%eax
	call	guest_start
	/* guest_start() never returns; if it somehow does, die loudly. */
1:	movl	$LHCALL_CRASH, %eax
	movl	$(entry_returned - PAGE_OFFSET), %edx
	int	$LGUEST_TRAP_ENTRY
	jmp	1b
	.size lguest_entry, . - lguest_entry
/*:*/

/*G:055 The Guest cannot clear or set the real interrupt flag, so its flag
 * is the irq_enabled word in lguest_data, and that creates one awkward
 * moment: returning from an interrupt.  A real "iret" restores the flag and
 * the instruction pointer at once.  We have to do it in two steps: copy the
 * IF bit of the saved eflags into irq_enabled, then iret.
 *
 * Between those two steps interrupts are "on" while we are still on the
 * interrupt's stack frame; if the Host delivered another interrupt there,
 * and another, each would nest one frame deeper before any iret finished.
 * So lguest_init() tells the Host about the addresses from the store to the
 * iret, [lguest_noirq_start, lguest_noirq_end), and the Host promises never
 * to inject an interrupt while the Guest's %eip is inside them.
 *
 * On entry 0(%esp) is eip, 4(%esp) cs and 8(%esp) eflags; after we save
 * %eax, eflags sits at 12(%esp).  The %ss override works whatever %ds the
 * interrupted code left behind. */
	.text
	.globl lguest_iret, lguest_noirq_start, lguest_noirq_end
	.type lguest_iret, @function
lguest_iret:
	pushl	%eax
	movl	12(%esp), %eax
	andl	$X86_EFLAGS_IF, %eax
lguest_noirq_start:
	movl	%eax, %ss:lguest_data + LGUEST_DATA_irq_enabled
	popl	%eax
	iret
lguest_noirq_end:
	.size lguest_iret, . - lguest_iret
/*:*/

	.section .rodata
entry_returned:
	.asciz "guest_start returned"

	.section .stack, "aw", @nobits
	.balign 16
	.globl boot_stack, boot_stack_top
boot_stack:
	.skip BOOT_STACK_SIZE
boot_stack_top:

	.section .note.GNU-stack, "", @progbits
