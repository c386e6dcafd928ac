# H:700 I/O, the 2.6.23 way: DMA between Guests and the Launcher.  There were no virtual PCI devices:
# a Guest "binds" arrays of receive buffers to a key (an address, by convention in its device's page)
# and "sends" a buffer list to a key.  A key that is private to the Guest goes to its Launcher, which
# gets {dma, key} from read() and does the work; a key in memory shared between Launchers goes to
# another Guest.  This module holds the bindings, SEND_DMA and the Launcher's GETDMA.
# :*
import ctypes
import errno

from . import abi

DMA_SIZE = ctypes.sizeof(abi.lguest_dma)
_USED_LEN = abi.lguest_dma.used_len.offset


class DmaInfo:
    """One binding (2.6.23's struct lguest_dma_info)."""
    __slots__ = ("key", "dmas", "next_dma", "num_dmas", "interrupt")

    def __init__(self, key, dmas, num_dmas, interrupt):
        self.key, self.dmas, self.num_dmas, self.interrupt = key, dmas, num_dmas, interrupt
        self.next_dma = 0


# H:710 A key is a Guest-physical address, which must be 4-byte aligned and inside the Launcher's
# memory (2.6.23 asked the futex code to resolve it in the Launcher's address space).  Keys are not
# checked against pfn_limit: the device pages above it are where they usually live.
# :*
def key_ok(lg, key):
    return key % 4 == 0 and key + 4 <= len(lg.mem)


# H:720 BIND_DMA: take one of the Guest's 32 binding records, or with irq 0 give one back.  The
# answer goes back in eax: 1 for success, 0 for failure.  A second unbind of the same pair finds
# nothing live and returns 0 (2.6.23 matched its stale record again; that was a bug, not an ABI).
# :*
def bind_dma(lg, key, dmas, num, irq):
    num &= 0xFFFF
    if irq >= abi.LGUEST_IRQS:
        return 0
    if not key_ok(lg, key):
        lg.kill_guest("bad dma key %#x" % key)
        return 0
    if irq == 0:
        for i, info in enumerate(lg.dma):
            if info is not None and info.key == key and info.dmas == dmas:
                lg.dma[i] = None
                return 1
        return 0
    for i, info in enumerate(lg.dma):
        if info is None:
            lg.dma[i] = DmaInfo(key, dmas, num, irq)
            return 1
    return 0


# H:730 SEND_DMA to a private key: the Host does not even look at the buffer list; it notes it, and
# the run loop hands {dma, key} to the Launcher, which checks and services it and writes used_len.
# :*
def send_dma(lg, key, udma):
    if not key_ok(lg, key):
        lg.kill_guest("bad sending DMA key")
        return
    lg.dma_is_pending = True
    lg.pending_dma, lg.pending_key = udma, key


# H:740 GETDMA: the Launcher wants a buffer the Guest bound to `key`, to put input into.  The first
# one with used_len 0 wins; when none is free, the last one is returned anyway (2.6.23 did so).  The
# IRQ to raise is written into used_len, where the Launcher reads it.
# :*
def get_dma(lg, key):
    for info in lg.dma:
        if info is None or info.key != key:
            continue
        if info.num_dmas == 0:
            break
        i = 0
        for i in range(info.num_dmas):
            addr = info.dmas + i * DMA_SIZE
            used = lg.peek_u32(addr + _USED_LEN)
            if used is None:
                lg.kill_guest("bad registered DMA buffer")
                return -errno.ENOENT
            if used == 0:
                break
        addr = info.dmas + i * DMA_SIZE
        lg.lgwrite_u32(addr + _USED_LEN, info.interrupt)
        return addr
    return -errno.ENOENT
