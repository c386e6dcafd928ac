# L:550 The Waker.  While the Guest runs, the Launcher is inside read(), and stays there until the
# Guest needs it.  But input doesn't wait for the Guest: a keystroke or a packet must reach it even
# if it is busy computing or halted waiting for exactly that.  So somebody else watches the input
# file descriptors, and when one is readable, asks the Host to break the Launcher out of read():
# {LHREQ_BREAK, 1}.  The Launcher's read() then returns EAGAIN, it services its input, and writes
# {LHREQ_BREAK, 0}, which is also what the Waker's BREAK has been waiting for, so the Waker never
# asks twice for the same input.
#
# 2.6.23's Waker was a forked child process.  BREAK is the one request the Host takes from anyone
# but the Launcher's own thread, so ours is simply a thread.  Its other input is a pipe from the
# Launcher: an fd number on it means "stop watching this one" (the console at end of input), and
# end-of-file means the Launcher is going away, so the Waker goes too.
# :*
"""The Waker thread: turns readable device input into LHREQ_BREAK."""
import os
import select
import signal
import struct
import threading

from lguest_kvm import abi

_INT = struct.Struct("i")
_BREAK_ON = struct.pack("<II", abi.LHREQ_BREAK, 1)
_READY = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR


class Waker:
    def __init__(self, lg, fds):
        self.lg = lg
        self.fds = [fd for fd in fds if fd >= 0]
        self.rfd, self.wfd = os.pipe2(os.O_CLOEXEC)
        self.thread = threading.Thread(target=self._main, name="lguest-waker", daemon=True)

    def start(self):
        self.thread.start()

    def ignore(self, fd):
        """Stop watching fd (sent in one atomic pipe write, as 2.6.23 sent it)."""
        if self.wfd >= 0:
            os.write(self.wfd, _INT.pack(fd))

    def stop(self):
        """Tell the Waker to end (EOF on its pipe); it finishes on its own."""
        if self.wfd >= 0:
            os.close(self.wfd)
            self.wfd = -1

    def join(self, timeout=1.0):
        if self.thread.is_alive():
            self.thread.join(timeout)
        if not self.thread.is_alive() and self.rfd >= 0:
            os.close(self.rfd)
            self.rfd = -1

    # L:560 The Waker's loop.  Every signal is blocked in this thread, so that a SIGTERM or the
    # Host's kick always lands on the Launcher's own thread, the one that can act on it.  A
    # message from the Launcher is handled before anything else, as 2.6.23 did: when the Launcher
    # gives up on an fd it says so before releasing our BREAK, so we never break again for an fd
    # the Launcher no longer reads.
    # :*
    def _main(self):
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            poller = select.poll()
            poller.register(self.rfd, select.POLLIN)
            for fd in self.fds:
                poller.register(fd, select.POLLIN)
            while True:
                events = dict(poller.poll())
                if self.rfd in events:
                    if not self._control(poller):
                        return
                    continue
                if any(ev & select.POLLNVAL for ev in events.values()):
                    for fd, ev in events.items():
                        if ev & select.POLLNVAL:
                            poller.unregister(fd)
                    continue
                if any(ev & _READY for ev in events.values()):
                    self.lg.write(_BREAK_ON)    # returns once the Launcher wrote BREAK 0
        except Exception:       # noqa: BLE001 - the Launcher closed the Guest under us: just end
            return

    def _control(self, poller):
        data = os.read(self.rfd, 4096)
        if not data:
            return False
        for (fd,) in _INT.iter_unpack(data[:len(data) - len(data) % _INT.size]):
            try:
                poller.unregister(fd)
            except KeyError:
                pass
        return True
