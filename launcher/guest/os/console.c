#include "os.h"

/*D:150 The console (2.6.23's drivers/char/hvc_lguest.c) is the simplest
 * lguest device: type 1, no pages, and always key 0.
 *
 * Output needs no driver at all: the runtime's console_write() sends each
 * chunk of up to 256 bytes with SEND_DMA to key 0, and the Launcher writes
 * it to its terminal.  That is why the banner can appear before any device
 * has been probed.
 *
 * Input goes the other way.  We bind a single 256-byte buffer at key 0
 * with the console's IRQ.  When a key is pressed, the Launcher asks the Host
 * for a buffer bound at key 0 (GETDMA), reads its terminal into it, puts the
 * count in used_len and raises our IRQ.  The handler copies the bytes out
 * and sets used_len back to 0, which is how the Guest says "this buffer is
 * free again": the Host only hands out buffers whose used_len is 0. */
static char inbuf[256];
static struct lguest_dma cons_input;
/*:*/

static char ring[1024];
static volatile unsigned ring_head, ring_tail;
static volatile unsigned ctrl_c;	/* how many ^C bytes are in the ring */

/*D:160 The interrupt handler runs with interrupts off (an interrupt gate)
 * and moves the bytes into a ring for the shell, which reads them at its
 * leisure.  The Launcher keeps its terminal in raw mode, so ^C arrives here
 * as a byte (0x03) rather than as a signal; we count them, so that a long
 * command (ping) can notice one without reading everything typed before it. */
static void cons_irq(unsigned irq, void *dev)
{
	unsigned n = *(volatile unsigned long *)&cons_input.used_len, i;

	(void)irq, (void)dev;
	if (n > sizeof(inbuf))
		n = sizeof(inbuf);
	for (i = 0; i < n; i++) {
		unsigned next = (ring_head + 1) % sizeof(ring);

		if (next == ring_tail)
			break;
		ring[ring_head] = inbuf[i];
		ring_head = next;
		if (inbuf[i] == 3)
			ctrl_c++;
	}
	wmb();
	cons_input.used_len = 0;
}

int lguestcons_probe(struct lguest_device *dev)
{
	unsigned irq = lgdev_irq(dev);

	dev->name = "hvc0";
	request_irq(irq, cons_irq, dev);
	cons_input.addr[0] = __pa(inbuf);
	cons_input.len[0] = sizeof(inbuf);
	cons_input.len[1] = 0;
	cons_input.used_len = 0;
	return lguest_bind_dma(LGUEST_CONSOLE_DMA_KEY, &cons_input, 1, irq);
}
/*:*/

int console_getc(void)
{
	unsigned long flags = local_irq_save();
	int c = -1;

	if (ring_tail != ring_head) {
		c = (u8)ring[ring_tail];
		ring_tail = (ring_tail + 1) % sizeof(ring);
		if (c == 3)
			ctrl_c--;
	}
	local_irq_restore(flags);
	return c;
}

int console_pending(void)
{
	return ring_tail != ring_head;
}

int ctrl_c_pending(void)
{
	return ctrl_c != 0;
}

/* Has ^C been typed?  If so, it and everything typed before it are thrown
 * away, as a terminal's interrupt character flushes its input. */
int interrupted(void)
{
	if (!ctrl_c)
		return 0;
	while (console_getc() != 3)
		;
	return 1;
}
