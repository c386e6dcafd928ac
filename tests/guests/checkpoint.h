/* A checkpoint: a DMA to a private key makes the Launcher's read() return, so a test can look at
 * the Host's state at that point.  The tag travels in addr[0] of the (empty) DMA; a Guest may put
 * more in the other addr[] slots before calling it. */
#ifndef CHECKPOINT_H
#define CHECKPOINT_H
#include "lguest.h"

#define CHECKPOINT_KEY 0x2000
static struct lguest_dma cp_dma;

static __attribute__((unused)) void checkpoint(unsigned tag)
{
	cp_dma.used_len = 0;
	cp_dma.len[0] = 0;
	cp_dma.addr[0] = tag;
	hcall(LHCALL_SEND_DMA, CHECKPOINT_KEY, __pa(&cp_dma), 0);
}
#endif
