# H:760 What every Guest on the host shares.  In 2.6.23 all Guests lived in one kernel: one array of
# 16 Guests, one hash of DMA bindings, and a sender could copy straight into another Guest's memory
# and wake its task.  Our Guests live in separate Launcher processes, so that shared kernel state
# becomes a small directory of files:
#
#   ids/N             16 lock files: holding an exclusive flock on N *is* being Guest N.  The kernel
#                     drops the lock when the process dies, so a Guest's id is free again however its
#                     Launcher ended, and anyone can ask "is Guest N alive?" by trying a shared lock.
#   dma-registry-UID  a page-aligned table, mapped MAP_SHARED by every Launcher of that user: per
#                     Guest, where its memory can be found (pid + memfd number, size, pfn_limit), the
#                     vCPU thread to kick, IRQs raised for it by other Guests and a death sentence
#                     passed by one of them; and its DMA bindings to shared keys.  An flock on the
#                     file (plus a thread lock, since flock does not exclude threads) guards it.
#
# A Guest-to-Guest send then works like 2.6.23's: under the lock, find the most recently bound live
# receiver, open its memory (/proc/PID/fd/N of its memfd, mapped once and cached), check and copy
# the sections, write both used_lens, set its IRQ bit and kick its vCPU thread with tgkill().
# :*
import ctypes
import errno
import fcntl
import mmap
import os
import stat
import struct
import tempfile
import threading

from . import abi

LOCKFILE_MODE = 0o666        # ids are host-wide, like 2.6.23's; a lock file carries no data
REGISTRY_MODE = 0o600        # bindings and memory locations are the owner's alone
REGISTRY_MAGIC = 0x4C474B31  # "LGK1"
MAX_BINDINGS = abi.LGUEST_MAX_DMA


_made_dir = None


# H:745 The directory is shared by every user on the host (Guest ids are host-wide), so it is made
# sticky, like /tmp, and the Host refuses one that anybody could empty or swap under it.  What is in
# it is opened without following symbolic links, and the registry, which says where Guest memory
# lives, must be a plain file of our own: one planted by another user is refused, not trusted.
# :*
def run_dir():
    """$LGUEST_KVM_IDDIR, or a directory in /tmp; made the first time it is asked for."""
    global _made_dir
    d = os.environ.get("LGUEST_KVM_IDDIR") or os.path.join(tempfile.gettempdir(), "lguest-kvm-ids")
    if d != _made_dir:
        try:
            os.mkdir(d)
            os.chmod(d, 0o1777)
        except FileExistsError:
            pass
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, "%s is not a directory: remove it, or set LGUEST_KVM_IDDIR" % d)
        if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX and st.st_uid != os.getuid():
            raise OSError(errno.EPERM, "%s is writable by everyone and not sticky: remove it, or "
                          "set LGUEST_KVM_IDDIR" % d)
        _made_dir = d
    return d


def take_guest_id():
    """The lowest free Guest id and the fd whose lock holds it; ENOSPC when all 16 are taken."""
    d = run_dir()
    for n in range(abi.MAX_LGUEST_GUESTS):
        fd = os.open(os.path.join(d, str(n)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     LOCKFILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return n, fd
        except BlockingIOError:
            os.close(fd)
    raise OSError(errno.ENOSPC, "all %d Guest slots are in use" % abi.MAX_LGUEST_GUESTS)


_id_fds = {}          # (directory, guestid) -> an fd of that lock file, kept for asking


def guest_alive(guestid):
    """Does some process hold Guest id `guestid`?  (Asked on every send, so the file stays open.)"""
    key = (run_dir(), guestid)
    fd = _id_fds.get(key)
    if fd is None:
        try:
            fd = os.open(os.path.join(key[0], str(guestid)), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        _id_fds[key] = fd
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


class SlotRec(ctypes.Structure):
    """One Guest's public facts."""
    _fields_ = [("pid", ctypes.c_int32), ("tid", ctypes.c_int32), ("nonce", ctypes.c_uint64),
                ("memfd", ctypes.c_int32), ("pfn_limit", ctypes.c_uint32), ("memsize", ctypes.c_uint64),
                ("pending_irqs", ctypes.c_uint32), ("killed", ctypes.c_uint32),
                ("kill_msg", ctypes.c_char * 96)]


class BindRec(ctypes.Structure):
    """One binding to a shared key (2.6.23's lguest_dma_info, keyed by file identity)."""
    _fields_ = [("active", ctypes.c_uint32), ("irq", ctypes.c_uint32), ("num", ctypes.c_uint32),
                ("next_dma", ctypes.c_uint32), ("dmas", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
                ("dev", ctypes.c_uint64), ("ino", ctypes.c_uint64), ("off", ctypes.c_uint64),
                ("seq", ctypes.c_uint64)]


class RegistryLayout(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("generation", ctypes.c_uint64),
                ("seq", ctypes.c_uint64), ("slots", SlotRec * abi.MAX_LGUEST_GUESTS),
                ("binds", (BindRec * MAX_BINDINGS) * abi.MAX_LGUEST_GUESTS)]


_SLOT_SIZE = ctypes.sizeof(SlotRec)
_SLOT_PENDING = RegistryLayout.slots.offset + SlotRec.pending_irqs.offset
_PENDING64 = struct.Struct("<Q")            # both at once: is either non-zero?
REGISTRY_SIZE = (ctypes.sizeof(RegistryLayout) + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)


class Registry:
    """The per-user table of Guests and shared-key bindings, one per process."""

    def __init__(self):
        path = os.path.join(run_dir(), "dma-registry-%d" % os.getuid())
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, REGISTRY_MODE)
        st = os.fstat(self.fd)
        if st.st_uid != os.getuid() or not stat.S_ISREG(st.st_mode):
            os.close(self.fd)
            raise OSError(errno.EPERM, "%s is not a file of ours (owner uid %d): remove it, or set "
                          "LGUEST_KVM_IDDIR" % (path, st.st_uid))
        os.fchmod(self.fd, REGISTRY_MODE)
        self.tlock = threading.RLock()
        with self:
            if os.fstat(self.fd).st_size < REGISTRY_SIZE:
                os.ftruncate(self.fd, REGISTRY_SIZE)
            self.map = mmap.mmap(self.fd, REGISTRY_SIZE, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self.table = RegistryLayout.from_buffer(self.map)
            if self.table.magic != REGISTRY_MAGIC:
                ctypes.memset(ctypes.addressof(self.table), 0, ctypes.sizeof(RegistryLayout))
                self.table.magic = REGISTRY_MAGIC
        self.peers = {}          # (guestid, nonce) -> mmap of that Guest's memory
        self.found = {}          # (generation, key identity, sender) -> receivers()

    def __enter__(self):
        self.tlock.acquire()
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.tlock.release()

    # H:770 Joining and leaving.  A new Guest N clears whatever a dead predecessor with the same id
    # left behind, then says where its memory is and which thread runs it.
    # :*
    def register(self, guestid, nonce, memfd, memsize, pfn_limit, tid):
        with self:
            s = self.table.slots[guestid]
            ctypes.memset(ctypes.addressof(s), 0, ctypes.sizeof(SlotRec))
            s.pid, s.tid, s.nonce = os.getpid(), tid, nonce
            s.memfd, s.memsize, s.pfn_limit = memfd, memsize, pfn_limit
            self._clear_bindings(guestid)

    def unregister(self, guestid, nonce):
        with self:
            s = self.table.slots[guestid]
            if s.nonce == nonce:
                self._clear_bindings(guestid)
                ctypes.memset(ctypes.addressof(s), 0, ctypes.sizeof(SlotRec))

    def _clear_bindings(self, guestid):
        ctypes.memset(ctypes.addressof(self.table.binds[guestid]), 0, ctypes.sizeof(BindRec) * MAX_BINDINGS)
        self.table.generation += 1

    def bind(self, guestid, index, ident, dmas, num, irq):
        with self:
            self.table.seq += 1
            b = self.table.binds[guestid][index]
            b.dev, b.ino, b.off = ident
            b.dmas, b.num, b.irq, b.next_dma, b.seq, b.active = dmas, num, irq, 0, self.table.seq, 1
            self.table.generation += 1

    def unbind(self, guestid, index):
        with self:
            self.table.binds[guestid][index].active = 0
            self.table.generation += 1

    def receivers(self, ident, sender):
        """Live bindings to `ident` of Guests other than `sender`, most recently bound first.  Every
        change to the bindings bumps the generation, so the answer is kept until the next one."""
        key = (self.table.generation, ident, sender)
        found = self.found.get(key)
        if found is None:
            found = []
            for gid in range(abi.MAX_LGUEST_GUESTS):
                if gid == sender or not self.table.slots[gid].pid:
                    continue
                for b in self.table.binds[gid]:
                    if b.active and (b.dev, b.ino, b.off) == ident:
                        found.append((b.seq, gid, b))
            found.sort(key=lambda t: -t[0])
            found = [(gid, b) for _, gid, b in found]
            if len(self.found) > 64:
                self.found.clear()
            self.found[key] = found
        return found

    def purge_if_dead(self, guestid):
        """Forget a Guest whose Launcher died without saying goodbye.  True if it was dead."""
        if guest_alive(guestid):
            return False
        s = self.table.slots[guestid]
        self.peers.pop((guestid, s.nonce), None)
        self._clear_bindings(guestid)
        ctypes.memset(ctypes.addressof(s), 0, ctypes.sizeof(SlotRec))
        return True

    def peer_memory(self, guestid):
        """Another Guest's memory, mapped through its memfd; None if it cannot be reached."""
        s = self.table.slots[guestid]
        key = (guestid, s.nonce)
        m = self.peers.get(key)
        if m is None:
            for old in [k for k in self.peers if k[0] == guestid]:
                del self.peers[old]         # a Guest that had this id before: its memory goes
            if s.memfd < 0:
                return None
            try:
                fd = os.open("/proc/%d/fd/%d" % (s.pid, s.memfd), os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                m = mmap.mmap(fd, s.memsize, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except (OSError, ValueError):
                return None
            finally:
                os.close(fd)
            self.peers[key] = m
        return m

    # H:780 Reaching another Guest's vCPU.  Its IRQ bit goes into its slot, then a kick to its thread
    # (tgkill, the process-directed cousin of pthread_kill).  Its run loop picks the bits up.  A bit
    # that is still set has a kick on its way already: the Guest has not collected since, and when it
    # does it takes every bit at once, so a stream of sends costs one kick, not one each.  A kill
    # works the same way: the first reason is written into its slot, and the Guest's own Host code
    # carries it out.
    # :*
    def raise_irq(self, guestid, irq):
        s = self.table.slots[guestid]
        bit = 1 << irq
        if s.pending_irqs & bit:
            return
        s.pending_irqs |= bit
        tgkill(s.pid, s.tid)

    def kill(self, guestid, msg):
        s = self.table.slots[guestid]
        if not s.killed:
            s.kill_msg = msg.encode("latin-1")[:95]
            s.killed = 1
        tgkill(s.pid, s.tid)

    def anything_for(self, guestid):
        """Whether other Guests left anything for this one: checked without any lock."""
        return _PENDING64.unpack_from(self.map, _SLOT_PENDING + guestid * _SLOT_SIZE)[0] != 0

    def collect(self, guestid, nonce):
        """(irq bits, death message or None) that other Guests left for this one."""
        if not self.anything_for(guestid):
            return 0, None                  # the usual case
        s = self.table.slots[guestid]
        with self:
            if s.nonce != nonce:
                return 0, None
            irqs, s.pending_irqs = s.pending_irqs, 0
            msg = s.kill_msg.decode("latin-1") if s.killed else None
            return irqs, msg


_libc = ctypes.CDLL(None, use_errno=True)
SYS_tgkill = 234


def tgkill(pid, tid):
    from .kick import SIG_KICK
    _libc.syscall(SYS_tgkill, pid, tid, int(SIG_KICK))


_registries = {}             # run_dir() -> its Registry: one each, however often the directory changes
_registry_lock = threading.Lock()


def registry():
    with _registry_lock:
        d = run_dir()
        reg = _registries.get(d)
        if reg is None:
            reg = _registries[d] = Registry()
            reg.path_dir = d
        return reg
