# H:900 Getting a running Guest's attention.  In 2.6.23 the Guest ran in the Launcher's own task, and
# anything that wanted it back — the clock event timer, a Waker's break request, a DMA from another
# Guest — simply woke or interrupted that task.  Here the Guest runs inside KVM_RUN on the Launcher's
# thread, and the way to get it out is a signal to that thread.
#
# We use one real-time signal, the "kick", and we never let it run a handler.  The thread keeps the
# kick blocked, and tells KVM (KVM_SET_SIGNAL_MASK) to unblock it only while the Guest runs.  A kick
# that arrives then ends KVM_RUN with EINTR; one that arrives while the Host is busy in Python stays
# pending and ends the next KVM_RUN at once — so no kick is ever lost, and no Python code runs in a
# signal handler.  A halted Guest sleeps in sigtimedwait() on the same signal, with the timer's
# deadline as its timeout.  The timer itself is a POSIX timer that sends the kick to the thread
# (SIGEV_THREAD_ID) when the Guest's clock event expires: no extra thread, no polling.
# :*
import ctypes
import errno
import os
import signal
import threading
import time

SIG_KICK = signal.SIGRTMIN + 6
# The longest the HALT sleep stays in one sigtimedwait() (see H:910).
SLEEP_SLICE_NS = 50_000_000

_libc = ctypes.CDLL(None, use_errno=True)
CLOCK_MONOTONIC = 1
SIGEV_THREAD_ID = 4
TIMER_ABSTIME = 1


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", timespec), ("it_value", timespec)]


class sigevent(ctypes.Structure):
    _fields_ = [("sigev_value", ctypes.c_uint64), ("sigev_signo", ctypes.c_int),
                ("sigev_notify", ctypes.c_int), ("sigev_tid", ctypes.c_int),
                ("_pad", ctypes.c_int * 11)]


_libc.timer_create.argtypes = [ctypes.c_int, ctypes.POINTER(sigevent), ctypes.POINTER(ctypes.c_void_p)]
_libc.timer_settime.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(itimerspec),
                                ctypes.c_void_p]
_libc.timer_delete.argtypes = [ctypes.c_void_p]
_libc.sigtimedwait.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(timespec)]


def _sigset(signals):
    """A kernel sigset_t (64 bits) as bytes."""
    bits = 0
    for s in signals:
        bits |= 1 << (int(s) - 1)
    return bits.to_bytes(8, "little")


class Kicker:
    """The kick signal and the clock event timer of one vCPU thread (the thread that calls this)."""

    def __init__(self, vm):
        self.ident = threading.get_ident()
        self.tid = threading.get_native_id()
        self.old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {SIG_KICK})
        # While the Guest runs, the thread's own mask applies again, less the kick.
        vm.set_signal_mask(_sigset(set(self.old_mask) - {SIG_KICK}))
        self._kickset = ctypes.create_string_buffer(_sigset({SIG_KICK}) + bytes(120))
        self.timer = ctypes.c_void_p()
        self.timer_created = False          # POSIX timer ids start at 0: the id can't say
        sev = sigevent(sigev_signo=SIG_KICK, sigev_notify=SIGEV_THREAD_ID, sigev_tid=self.tid)
        if _libc.timer_create(CLOCK_MONOTONIC, ctypes.byref(sev), ctypes.byref(self.timer)) < 0:
            e = ctypes.get_errno()
            raise OSError(e, "timer_create: " + os.strerror(e))
        self.timer_created = True

    def kick(self):
        """From any thread of this process: make the vCPU thread look at the Guest again."""
        try:
            signal.pthread_kill(self.ident, SIG_KICK)
        except ProcessLookupError:
            pass       # the thread is gone; so is anyone to tell

    def drain(self):
        """Consume pending kicks (they queue); True if there was at least one."""
        got = False
        while self._wait(self._kickset, 0) == SIG_KICK:
            got = True
        return got

    @staticmethod
    def _wait(sigset, timeout_ns):
        """sigtimedwait(): the signal taken, or -errno."""
        ts = timespec(timeout_ns // 1_000_000_000, timeout_ns % 1_000_000_000)
        r = _libc.sigtimedwait(sigset, None, ctypes.byref(ts))
        return r if r > 0 else -ctypes.get_errno()

    # H:910 Sleeping without losing a signal.  The Launcher's own signals (SIGTERM, a timer's
    # SIGALRM...) interrupt the sleep and read() says EINTR, as 2.6.23's interruptible sleep did.  But
    # Python runs a signal's handler only between bytecodes: one that arrives just before we enter
    # sigtimedwait() has already been taken by the C-level handler and will not interrupt it.  So
    # the sleep is cut into slices of 50 ms, and between slices Python gets to run such a handler
    # (the Launcher's SIGTERM handler raises, and that ends read()).  Blocking the Launcher's signals
    # outside KVM_RUN instead would send them to other threads, whose handlers then wait for us.
    # :*
    def sleep(self, deadline_ns):
        """Sleep until kicked or deadline (monotonic ns; None = forever).  0, or -EINTR for a signal."""
        while True:
            left = SLEEP_SLICE_NS if deadline_ns is None else deadline_ns - time.monotonic_ns()
            if left <= 0:
                return 0
            r = self._wait(self._kickset, min(left, SLEEP_SLICE_NS))
            if r == SIG_KICK:
                return 0
            if r == -errno.EINTR:
                return -errno.EINTR

    def arm(self, deadline_ns):
        """Send a kick at monotonic time deadline_ns (None disarms)."""
        its = itimerspec()
        if deadline_ns is not None:
            its.it_value = timespec(deadline_ns // 1_000_000_000, deadline_ns % 1_000_000_000)
        _libc.timer_settime(self.timer, TIMER_ABSTIME, ctypes.byref(its), None)

    def close(self):
        if self.timer_created:
            _libc.timer_delete(self.timer)
            self.timer_created = False
        if threading.get_ident() == self.ident:
            self.drain()
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old_mask)
