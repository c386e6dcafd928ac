/* What the user-mode test Guest's kernel (um_kernel.c) and its user program
 * (um_user.S) agree on: the segments, the user address space and the
 * system call numbers. */
#ifndef UM_USER_H
#define UM_USER_H

#define USER_CS		0x73		/* GDT 14, RPL 3 */
#define USER_DS		0x7B		/* GDT 15, RPL 3 */

#define UCODE		0x08048000	/* the program's one code page */
#define USTACK_TOP	0x0C000000	/* its stack page is just below */
#define UDATA		0x10000000	/* two pages mapped on demand */

#define SYS_NOP		0		/* nothing: for counting exits */
#define SYS_WRITE	1		/* printk ebx */
#define SYS_ADD		2		/* eax = ebx + ecx */
#define SYS_EXIT	3		/* status in ebx */
#define SYS_CHECK	4		/* ebx = value user read at ecx; eax = kernel's view */
#define SYS_CHECKPOINT	5		/* a DMA to a private key, tag ebx */

#ifndef LOOP_N
#define LOOP_N		20		/* SYS_NOP loops of N, then 2N */
#endif

#endif
