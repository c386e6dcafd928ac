# L:600 The console: the one device every Guest has, and the simplest.  It has no pages, so its
# key is 0 (LGUEST_CONSOLE_DMA_KEY).  Output is the Guest sending us a buffer list, which we write
# to our standard output.  Input is the other way round: the Guest binds one receive buffer to key
# 0, and when our standard input has something, we ask the Host for that buffer (GETDMA), read
# straight into it, say how much we put there (used_len) and raise the console's interrupt.
#
# So that keystrokes reach the Guest as they are typed, and not a line at a time with our
# terminal echoing them, standard input leaves canonical mode, echo and signal keys behind: ^C is
# just a byte for the Guest.  The old settings come back however the Launcher ends.
# :*
"""The console device: Guest output to stdout, stdin to the Guest, the terminal's mode."""
import errno
import fcntl
import os
import struct
import termios
import time

from .devices import Device, LGUEST_DEVICE_T_CONSOLE

LGUEST_CONSOLE_DMA_KEY = 0
STDIN, STDOUT = 0, 1


class Terminal:
    """Standard input's termios settings, changed once and restored (idempotently)."""

    def __init__(self, fd=STDIN):
        self.fd = fd
        self.saved = None

    def make_raw(self):
        try:
            self.saved = termios.tcgetattr(self.fd)
        except (termios.error, OSError):
            return False                        # not a terminal: nothing to change or restore
        raw = termios.tcgetattr(self.fd)
        raw[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG)
        termios.tcsetattr(self.fd, termios.TCSANOW, raw)
        return True

    def restore(self):
        saved, self.saved = self.saved, None
        if saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSANOW, saved)
            except (termios.error, OSError):
                pass


class Console(Device):
    name = "console"

    def __init__(self, devices, launcher):
        super().__init__(devices, LGUEST_DEVICE_T_CONSOLE, 0, 0, LGUEST_CONSOLE_DMA_KEY)
        self.launcher = launcher
        self.terminal = Terminal(STDIN)
        self.scratch = bytearray(1024)
        self.abort_count, self.abort_start = 0, 0.0
        try:
            os.fstat(STDIN)
            self.input_fd = STDIN
        except OSError:
            self.input_fd = -1                  # no stdin at all: output only

    # L:610 Output: writev() the Guest's sections to stdout as they are, and tell the Guest how
    # many bytes went out.
    # :*
    def handle_output(self, launcher, dma):
        iov = launcher.dma_iov(dma)
        try:
            return os.writev(STDOUT, iov)
        except OSError:
            return 0xFFFFFFFF                   # -1, as writev() would have returned

    # L:620 Input.  If the Guest has no buffer bound, 2.6.23 grumbled "console: no dma buffer!"
    # and read the input into a scratch buffer anyway, so it is not seen again (we grumble only
    # when some input really was lost).  End of input (a read of nothing, or an error) means:
    # stop watching stdin, and give the terminal back.
    #
    # And a way out that doesn't depend on the Guest: with ISIG off, ^C no longer kills us, so
    # three ^Cs within a second, each arriving on its own, end the Launcher with status 2.
    # :*
    def handle_input(self, launcher):
        if self._at_eof():
            return self._end_of_input(launcher)
        dma = launcher.getdma(LGUEST_CONSOLE_DMA_KEY)
        iov = launcher.dma_iov(dma) if dma is not None else []
        irq = launcher.devices.used_len(dma) if dma is not None else None   # GETDMA put it there
        target = iov or [memoryview(self.scratch)]      # no buffer (or an empty one): discard
        try:
            n = os.readv(STDIN, target)
        except OSError as e:
            n = None if e.errno in (errno.EAGAIN, errno.EINTR) else 0
        if dma is not None:
            launcher.devices.set_used_len(dma, n if n and iov else 0)
        if not n:
            return True if n is None else self._end_of_input(launcher)
        if iov:
            launcher.trigger_irq(irq)
        else:
            launcher.warn("console: no dma buffer!")
        self._check_abort(launcher, n == 1 and target[0][0] == 3)
        return True

    def _end_of_input(self, launcher):
        launcher.verbose("console: end of input, ignoring console")
        self.terminal.restore()
        return False

    # 2.6.23 found the end of input by reading into the Guest's buffer, which GETDMA had marked
    # (with the IRQ number in used_len): and if the Guest had not yet taken the last input, that
    # buffer was the one it got again, and its contents were lost.  Piped input ends just so, right
    # after its last line.  So when the Waker says "readable" and nothing is there to read, we
    # leave the Guest's buffer alone.
    def _at_eof(self):
        try:
            avail = struct.unpack("i", fcntl.ioctl(STDIN, termios.FIONREAD, b"\0" * 4))[0]
        except OSError:
            return False                        # can't tell: the read will
        return avail == 0

    def _check_abort(self, launcher, was_ctrl_c):
        if not was_ctrl_c:
            self.abort_count = 0
            return
        now = time.monotonic()
        if self.abort_count == 0:
            self.abort_start = now
        self.abort_count += 1
        if self.abort_count == 3:
            self.abort_count = 0
            if now - self.abort_start <= 1.0:
                launcher.verbose("console: three ^C within a second: exiting")
                raise SystemExit(2)

    def close(self):
        self.terminal.restore()

