# H:700 I/O, the 2.6.23 way: DMA between Guests and the Launcher.  There were no virtual PCI devices:
# a Guest "binds" arrays of receive buffers to a key (an address, by convention in its device's page)
# and "sends" a buffer list to a key.  A key that is private to the Guest goes to its Launcher, which
# gets {dma, key} from read() and does the work; a key in memory shared between Launchers goes to
# another Guest.  This module holds the bindings, SEND_DMA and the Launcher's GETDMA.
# :*
import ctypes
import errno
import struct

from . import abi

DMA_SIZE = ctypes.sizeof(abi.lguest_dma)
_USED_LEN = abi.lguest_dma.used_len.offset
_U32 = struct.Struct("<I")


class DmaInfo:
    """One binding (2.6.23's struct lguest_dma_info); `shared` holds the file identity of a shared key.
    `order` says when it was bound: 2.6.23 put new bindings at the head of their hash bucket, so the
    most recent binding of a key is the one found first."""
    __slots__ = ("key", "dmas", "next_dma", "num_dmas", "interrupt", "shared", "order")
    bound = 0

    def __init__(self, key, dmas, num_dmas, interrupt, shared):
        self.key, self.dmas, self.num_dmas, self.interrupt = key, dmas, num_dmas, interrupt
        self.next_dma, self.shared = 0, shared
        DmaInfo.bound += 1
        self.order = DmaInfo.bound


# H:710 A key is a Guest-physical address, which must be 4-byte aligned and inside the Launcher's
# memory (2.6.23 asked the futex code to resolve it in the Launcher's address space).  Keys are not
# checked against pfn_limit: the device pages above it are where they usually live.  A key in a page
# the Launcher mapped from a file with MAP_SHARED is shared, and is known by the file's identity.
# :*
def key_ok(lg, key):
    return key % 4 == 0 and key + 4 <= len(lg.mem)


def key_identity(lg, key):
    return lg.keys.identity(key)


def _same_key(lg, info, key, shared):
    return info.shared == shared if shared is not None else (info.shared is None and info.key == key)


# H:720 BIND_DMA: take one of the Guest's 32 binding records, or with irq 0 give one back.  The
# answer goes back in eax: 1 for success, 0 for failure.  A second unbind of the same pair finds
# nothing live and returns 0 (2.6.23 matched its stale record again; that was a bug, not an ABI).
# Bindings to shared keys are also published in the host-wide registry, for other Guests to find.
# :*
def bind_dma(lg, key, dmas, num, irq):
    num &= 0xFFFF
    if irq >= abi.LGUEST_IRQS:
        return 0
    if not key_ok(lg, key):
        lg.kill_guest("bad dma key %#x" % key)
        return 0
    shared = key_identity(lg, key)
    if irq == 0:
        for i, info in enumerate(lg.dma):
            if info is not None and _same_key(lg, info, key, shared) and info.dmas == dmas:
                lg.dma[i] = None
                lg.dma_latest.clear()
                if shared is not None:
                    lg.registry.unbind(lg.guestid, i)
                return 1
        return 0
    for i, info in enumerate(lg.dma):
        if info is None:
            lg.dma[i] = DmaInfo(key, dmas, num, irq, shared)
            lg.dma_latest.clear()
            if shared is not None:
                lg.registry.bind(lg.guestid, i, shared, dmas, num, irq)
            return 1
    return 0


# H:730 SEND_DMA to a private key: the Host does not even look at the buffer list; it notes it, and
# the run loop hands {dma, key} to the Launcher, which checks and services it and writes used_len.
# A shared key goes to another Guest instead, never to the Launcher.
# :*
def send_dma(lg, key, udma):
    if not key_ok(lg, key):
        lg.kill_guest("bad sending DMA key")
        return
    shared = key_identity(lg, key)
    if shared is not None:
        send_to_guest(lg, shared, udma)
        return
    lg.dma_is_pending = True
    lg.pending_dma, lg.pending_key = udma, key


# H:740 GETDMA: the Launcher wants a buffer the Guest bound to `key`, to put input into.  The most
# recent binding of the key is used, and in it the first buffer with used_len 0; when none is free,
# the last one is returned anyway (2.6.23 did so).  The IRQ to raise is written into used_len, where
# the Launcher reads it.  A key that could not have been bound kills the Guest, and an array the
# Host cannot read kills it as 2.6.23's lgread() did, which then went on as if it read zeros.
# :*
def get_dma(lg, key):
    if not key_ok(lg, key):
        lg.kill_guest("bad registered DMA buffer")
        return -errno.ENOENT
    shared = key_identity(lg, key)
    # The Launcher asks for the same key again and again (a device's requests), and the answer
    # changes only when a binding does: BIND_DMA forgets what we found here.
    known = key if shared is None else shared
    info = lg.dma_latest.get(known, _UNKNOWN)
    if info is _UNKNOWN:
        info = lg.dma_latest[known] = _latest_binding(lg, key, shared)
    if info is None or info.num_dmas == 0:
        return -errno.ENOENT
    mem, address_ok = lg.mem, lg.address_ok
    addr = info.dmas
    for _ in range(info.num_dmas):
        if not address_ok(addr, DMA_SIZE):
            lg.kill_guest("bad read address %#x len %u" % (addr, DMA_SIZE))
            break
        if _U32.unpack_from(mem, addr + _USED_LEN)[0] == 0:
            break
        addr += DMA_SIZE
    else:
        addr -= DMA_SIZE                        # none free: the last one, as 2.6.23 did
    lg.lgwrite_u32(addr + _USED_LEN, info.interrupt)
    return addr


_UNKNOWN = object()


def _latest_binding(lg, key, shared):
    info = None
    for d in lg.dma:
        if d is not None and _same_key(lg, d, key, shared) and (info is None or d.order > info.order):
            info = d
    return info


# H:790 Guest to Guest (2.6.23's send_dma to a shared key, and dma_transfer).  Under the registry
# lock, the most recently bound live receiver that is not the sender gets the data: the first of its
# buffers from next_dma on with used_len 0 (an array outside its memory kills it).  Both buffer lists
# are checked first — no section over a page, none crossing a page, all inside its owner's
# pfn_limit — and a bad one kills its owner.  Then the sections are copied as two streams, the total
# goes into both used_lens, and the receiver's IRQ is raised, even for an empty "ping".  A receiver
# with no free buffer (or none at all: num 0) still gets its IRQ, and the send is tried once more, as
# 2.6.23 did, to give it a chance to make room.
# :*
def send_to_guest(lg, ident, udma):
    reg = lg.registry
    for attempt in (0, 1):
        with reg:
            result = _transfer_once(lg, reg, ident, udma)
        if result != "full":
            return


def _transfer_once(lg, reg, ident, udma):
    for gid, b in reg.receivers(ident, lg.guestid):
        if reg.purge_if_dead(gid):
            continue
        peer = reg.peer_memory(gid)
        if peer is None:
            continue
        return dma_transfer(lg, reg, gid, b, memoryview(peer), udma)
    return "none"


def _sections(dma):
    out = []
    for addr, length in zip(dma.addr, dma.len):
        if length == 0:
            break
        out.append((addr, length))
    return out


def check_dma_list(limit_bytes, sections):
    """The bad section's (len, addr), or None when every section is fine."""
    for addr, length in sections:
        end = addr + length
        if end // 4096 >= limit_bytes // 4096 or end > 0xFFFFFFFF or length > 4096 \
                or (addr % 4096) + length > 4096:
            return length, addr
    return None


def dma_transfer(lg, reg, gid, b, peer, udma):
    slot = reg.table.slots[gid]
    peer_limit = slot.pfn_limit * 4096
    if lg.address_ok(udma, DMA_SIZE):
        src = abi.lguest_dma.from_buffer_copy(lg.mem, udma)
    else:                           # 2.6.23's lgread(): a dead sender, and an empty send
        lg.kill_guest("bad read address %#x len %u" % (udma, DMA_SIZE))
        src = abi.lguest_dma()
    num, dmas, next_dma, end = b.num, b.dmas, b.next_dma, min(peer_limit - 1, len(peer))
    for i in range(num):
        at = dmas + ((next_dma + i) % num) * DMA_SIZE
        if at + DMA_SIZE > end:
            reg.kill(gid, "bad address in registered DMA struct")
            return "dead"
        if _U32.unpack_from(peer, at)[0] == 0:
            break
    else:
        reg.raise_irq(gid, b.irq)
        return "full"
    dst = abi.lguest_dma.from_buffer_copy(peer, at)
    total = _do_dma(lg, reg, gid, peer, peer_limit, _sections(src), _sections(dst))
    lg.lgwrite_u32(udma + _USED_LEN, total)
    if total == 0 and src.len[0] != 0:
        return "failed"
    struct.pack_into("<I", peer, at + _USED_LEN, total)
    b.next_dma = (b.next_dma + 1) & 0xFFFF
    reg.raise_irq(gid, b.irq)
    return "done"


# H:795 The copy itself.  Both lists are checked against their owners' pfn_limit first, the
# receiver's before the sender's.  A Launcher may still have passed a pfn_limit larger than the
# memory it really has: 2.6.23 found that out when it pinned the receiver's pages ("Error mapping DMA
# pages") or when copying from the sender faulted ("bad address in sending DMA", and nothing counts
# as copied).  We check the same two things against the two buffers, so a bad list never becomes an
# exception in the Host.
# :*
def _do_dma(lg, reg, gid, peer, peer_limit, src_sections, dst_sections):
    bad = check_dma_list(peer_limit, dst_sections)
    if bad:
        reg.kill(gid, "bad DMA entry: %u@%#x" % bad)
        return 0
    bad = check_dma_list(lg.pfn_limit * 4096, src_sections)
    if bad:
        lg.kill_guest("bad DMA entry: %u@%#x" % bad)
        return 0
    if any(addr + length > len(peer) for addr, length in dst_sections):
        reg.kill(gid, "Error mapping DMA pages")
        return 0
    total = copy_sections(lg.mem, src_sections, peer, dst_sections)
    if total is None:
        lg.kill_guest("bad address in sending DMA")
        return 0
    return total


def copy_sections(src_mem, src, dst_mem, dst):
    """Copy the src sections into the dst sections as two streams; the bytes copied, or None when a
    source section lies outside src_mem (what was copied before it stays copied)."""
    total, si, di, soff, doff = 0, 0, 0, 0, 0
    while si < len(src) and di < len(dst):
        saddr, slen = src[si]
        daddr, dlen = dst[di]
        if saddr + slen > len(src_mem):
            return None
        n = min(slen - soff, dlen - doff)
        dst_mem[daddr + doff:daddr + doff + n] = src_mem[saddr + soff:saddr + soff + n]
        total += n
        soff += n
        doff += n
        if soff == slen:
            si, soff = si + 1, 0
        if doff == dlen:
            di, doff = di + 1, 0
    return total


def release_bindings(lg):
    """close(): forget every binding (2.6.23's release unbound all the Guest's arrays)."""
    lg.dma = [None] * abi.LGUEST_MAX_DMA
    lg.dma_latest.clear()
