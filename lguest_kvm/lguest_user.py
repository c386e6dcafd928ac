# L:100 /dev/lguest, the Launcher's only door into the Host.  In 2.6.23 it was a character device
# with three operations: write() a request, read() to run the Guest, close() to tear it down.  Here
# the Host is a library in the Launcher's own process, so the "device" is an object with those same
# three methods, the same request format and the same errnos (raised as OSError).  The one change
# the move forces: the Launcher hands over its Guest memory when it opens the device, since there is
# no kernel to look into its address space for us.
#
#     lg = lguest_kvm.open(memory)        # memory: a writable buffer, gpa 0 == memory[0]
#     lg.write(struct.pack("<5I", LHREQ_INITIALIZE, pfn_limit, pgdir, start, page_offset))  # -> 16
#     lg.read(8)                          # runs the Guest: {dma, key}, or the death message
# :*
import errno
import os
import struct
import threading

from . import abi, hostwide, io
from .core import Guest
from .stats import ExitStats
from .kvm import KVM

_WORD = struct.Struct("<I")


class Lguest:
    """One open /dev/lguest."""

    def __init__(self, memory, kvm_path="/dev/kvm", paging=None):
        mv = memoryview(memory)
        if mv.readonly:
            raise OSError(errno.EFAULT, "Guest memory must be writable")
        mv.release()
        self.memory = memory
        self.kvm = KVM(kvm_path)
        try:
            self.paging = choose_paging(self.kvm.kind, paging)
        except OSError:
            self.kvm.close()
            raise
        self.guest = None
        self.owner = None
        self.id_fd = -1
        self._cond = threading.Condition()
        self.want_stats = False
        self.closed = False
        self.last_stats = None

    def enable_stats(self):
        """Count and time every exit and hypercall from now on (stats_report() gives the table)."""
        self.want_stats = True
        if self.guest is not None and self.guest.stats is None:
            self.guest.stats = ExitStats()

    def stats_report(self):
        """kvm_stat's view of this Guest as text, or None if statistics were not enabled."""
        st = self.guest.stats if self.guest is not None else self.last_stats
        return st.report(self.kvm.kind, self.paging) if st is not None else None

    @property
    def kind(self):
        """Which KVM this Host runs on: 'vmx', 'svm', 'kvm-pvm' or 'unknown'."""
        return self.kvm.kind

    # L:120 write(): the first word says which request.  The order of the checks is 2.6.23's, and so is
    # each answer: INITIALIZE returns 16 (the size of its arguments), IRQ and BREAK return 0, GETDMA
    # returns an address.  Only BREAK may come from a thread other than the one that initialized the
    # Guest: that is how the Waker gets the running Guest's attention.
    # :*
    def write(self, data):
        if self.closed:
            raise OSError(errno.EBADF, "the lguest device is closed")
        # The Launcher writes IRQ and GETDMA once or twice per DMA it services, so this path is
        # kept short: no copy of a bytes object, and the one argument read where it lies.
        data = bytes(data)
        if len(data) < 4:
            raise OSError(errno.EFAULT, "short write: no request word")
        req = _WORD.unpack_from(data)[0]
        lg = self.guest
        if lg is None and req != abi.LHREQ_INITIALIZE:
            raise OSError(errno.EINVAL, "Guest not initialized")
        if lg is not None and lg.dead is not None:
            raise OSError(errno.ENOENT, "Guest is dead")
        if lg is not None and req != abi.LHREQ_BREAK and threading.get_ident() != self.owner:
            raise OSError(errno.EPERM, "not the thread that initialized this Guest")
        if req == abi.LHREQ_INITIALIZE:
            return self._initialize(data[4:])
        if len(data) < 8:
            raise OSError(errno.EFAULT, "short write: request needs 1 argument words")
        arg = _WORD.unpack_from(data, 4)[0]
        if req == abi.LHREQ_IRQ:
            if arg >= abi.LGUEST_IRQS:
                raise OSError(errno.EINVAL, "no IRQ %d" % arg)
            lg.irqs_pending |= 1 << arg
            return 0
        if req == abi.LHREQ_GETDMA:
            r = io.get_dma(lg, arg)
            if r < 0:
                raise OSError(-r, "no DMA buffer bound to key %#x" % arg)
            return r
        if req == abi.LHREQ_BREAK:
            return self._break(lg, arg)
        raise OSError(errno.EINVAL, "unknown request %d" % req)

    def _initialize(self, argbytes):
        if self.guest is not None:
            raise OSError(errno.EBUSY, "Guest already initialized")
        pfn_limit, pgdir, start, page_offset = _args(argbytes, 4)
        if page_offset >> 22 >= abi.SWITCHER_PGD_INDEX:
            raise OSError(errno.EINVAL, "page_offset %#x collides with the Switcher" % page_offset)
        guestid, self.id_fd = hostwide.take_guest_id()
        try:
            self.guest = Guest(self.kvm, self.memory, guestid, pfn_limit, pgdir, start, page_offset,
                               self.paging)
        except BaseException:
            os.close(self.id_fd)
            self.id_fd = -1
            raise
        self.owner = threading.get_ident()
        if self.want_stats:
            self.guest.stats = ExitStats()
        return 16

    # L:140 BREAK, the Waker's request.  "On" makes the running Guest come out (read() returns EAGAIN)
    # and then waits, as 2.6.23's writer slept, until the Launcher has serviced its input and written
    # "off".  Closing the device releases a waiting writer too.
    # :*
    def _break(self, lg, on):
        with self._cond:
            if self.guest is not lg:
                raise OSError(errno.ENOENT, "the Guest is gone")     # closed meanwhile
            if on:
                lg.break_out = True
                lg.kicker.kick()
                while self.guest is lg and lg.break_out and lg.dead is None:
                    self._cond.wait()
            else:
                lg.break_out = False
                self._cond.notify_all()
        return 0

    # L:130 read(): run the Guest.  It returns only when there is something for the Launcher: a DMA it
    # must service (8 bytes: the DMA's address and key), or an errno: EAGAIN for a break, EINTR for a
    # signal, ENOENT when the Guest has just died.  Once dead, read() returns the death message.
    # :*
    def read(self, size):
        if self.closed:
            raise OSError(errno.EBADF, "the lguest device is closed")
        lg = self.guest
        if lg is None:
            raise OSError(errno.EINVAL, "Guest not initialized")
        if threading.get_ident() != self.owner:
            raise OSError(errno.EPERM, "not the thread that initialized this Guest")
        if lg.dead is not None:
            msg = lg.dead.encode("latin-1") + b"\0"
            return msg[:max(0, size)]
        # The DMA the last read() returned has been seen: the Guest may go on.  One that an exception
        # from a signal handler kept from reaching the Launcher is returned again instead (H:205);
        # nothing between run() returning it and marking it seen calls out, so no handler runs there.
        if lg.dma_reported:
            lg.dma_is_pending = lg.dma_reported = False
        r = lg.run()
        if r.__class__ is bytes:
            lg.dma_reported = True
            return r
        raise OSError(-r, os.strerror(-r))

    def close(self):
        self.closed = True
        with self._cond:
            lg, self.guest = self.guest, None
            self._cond.notify_all()
        if lg is not None:
            self.last_stats = lg.stats
            lg.release()
        if self.id_fd >= 0:
            os.close(self.id_fd)
            self.id_fd = -1
        self.kvm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_ARGS = {n: struct.Struct("<%dI" % n) for n in (1, 4)}


def _args(data, n):
    if len(data) < 4 * n:
        raise OSError(errno.EFAULT, "short write: request needs %d argument words" % n)
    return _ARGS[n].unpack_from(data)


def open(memory, kvm_path="/dev/kvm", paging=None):          # noqa: A001 - the device's own name
    """Open the lguest device for a Guest whose memory (gpa 0 onwards) is `memory`.  paging is
    "shadow" (lguest's shadow page tables), "direct" (the Guest's own tables under EPT/NPT, hardware
    KVM only) or None for the default: $LGUEST_KVM_PAGING if set, else direct where it can run."""
    return Lguest(memory, kvm_path, paging)


# L:115 Two ways to page.  lguest's own shadow page tables run on every KVM; the direct backend
# (direct.py) needs a vCPU that can page in 32-bit protected mode, which hardware KVM has and kvm-pvm
# has not.  The default is the fastest that runs: direct on hardware, shadow elsewhere.
# :*
PAGING_MODES = ("shadow", "direct")


def choose_paging(kind, paging=None):
    paging = paging or os.environ.get("LGUEST_KVM_PAGING") or None
    if paging is None:
        return "direct" if kind in ("vmx", "svm") else "shadow"
    if paging not in PAGING_MODES:
        raise OSError(errno.EINVAL, "paging must be shadow or direct, not %r" % paging)
    if paging == "direct" and kind not in ("vmx", "svm"):
        raise OSError(errno.EINVAL, "direct paging needs hardware KVM (VMX or SVM); this KVM is %s, "
                      "which cannot page in 32-bit mode: use shadow" % kind)
    return paging
