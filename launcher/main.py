# L:300 The Launcher: the `lguest` command.  In 2.6.23 it was one C file, Documentation/lguest/
# lguest.c, and its job is the same here: read the command line, lay out the Guest's memory (the
# kernel, its page tables and boot parameters, the device pages), open the Host and tell it where
# things are, and then sit in a loop running the Guest and servicing its devices until it dies.
#
#     lguest [--verbose|-v] [--sharenet=FILE] [--tunnet=IPV4|bridge:NAME] [--block=FILE]
#            [--initrd=FILE] ... MEM_MB [KERNEL [ARGS...]]
#
# Every failure is one line on standard error and a non-zero exit status; the one that isn't a
# failure is the Guest powering itself off ("CRASH: Power down"), which exits 0.
# :*
"""The lguest command: options, Guest memory layout, the Host, the run loop."""
import errno
import os
import select
import signal
import struct
import sys

from lguest_kvm import abi

from . import loader
from .devices import DeviceList, Fatal, PAGE_SIZE

MB = 1 << 20
MIN_MEM_MB = 2                  # the zero page and command line below 1 MB, a kernel at 1 MB
MAX_MEM_MB = 4095               # every gpa, device pages included, must fit in 32 bits
POWER_DOWN = "CRASH: Power down"
KVM_DEVICE_ENV = "LGUEST_KVM_DEVICE"

USAGE = ("lguest [--verbose|-v] [--sharenet=FILE] [--tunnet=IPV4|bridge:NAME] [--block=FILE] "
         "[--initrd=FILE] [--paging=shadow|direct] [--stats] ... MEM_MB [KERNEL [ARGS...]]")

HELP = """\
usage: """ + USAGE + """

Run an lguest Guest kernel (Linux 2.6.23's lguest ABI) on /dev/kvm.

  MEM_MB              Guest memory in megabytes: the number at the start of the first
                      argument that does not begin with '-' (so "64" and "64m" both mean
                      64 MB).  At least %d, at most %d.
  KERNEL              the Guest kernel: an lguest vmlinux (32-bit ELF) or a bzImage.
                      Default: the small Guest OS bundled with lguest-kvm.
  ARGS...             the Guest kernel's command line, each argument followed by a space.
                      Put "--" before them if any begins with '-'.

Options (anywhere on the line, repeatable, values only in the --option=VALUE form;
devices appear to the Guest in the order given, and the console is always last):
  -v, --verbose       say what the Launcher does, on standard error
  --block=FILE        a disk backed by FILE (its size, in 512-byte sectors, is the disk's
                      size; requests outside it fail, the file never grows); O_DIRECT where
                      the filesystem allows it
  --tunnet=IPV4       a network card connected to a new TAP device on this host, which gets
                      address IPV4 and is brought up (needs CAP_NET_ADMIN, e.g. root)
  --tunnet=bridge:NAME
                      the same, with the TAP device added to bridge NAME instead
  --sharenet=FILE     a network card on a network shared with every other Guest whose
                      Launcher names the same FILE (created, mode 0600, if missing)
  --initrd=FILE       load FILE as the initial ramdisk, at the top of Guest memory
  --stats             on exit, print how many exits of each kind and hypercalls of each
                      number the Host handled and the time it spent on them (like kvm_stat)
  --paging=shadow     run the Guest on lguest's shadow page tables (works on every KVM)
  --paging=direct     run the Guest on its own page tables, with the hardware's nested
                      paging (EPT/NPT) underneath (needs Intel VMX or AMD SVM).  Default:
                      direct where KVM can run it, shadow elsewhere; -v says which
  -h, --help          show this help and exit

The console is this terminal: standard input goes to the Guest unechoed and unbuffered
(^C too), Guest output comes to standard output.  Three ^C within one second end the
Launcher (exit status 2).  When the Guest powers off, lguest exits 0; when it dies any
other way it prints "lguest: <why>" and exits 1.  Errors exit 1 with one line on
standard error.

Environment: %s names the KVM device (default /dev/kvm).
""" % (MIN_MEM_MB, MAX_MEM_MB, KVM_DEVICE_ENV)


class UsageError(Exception):
    """A bad command line: reported with the usage line, exit status 1."""


class GuestDied(Exception):
    """A request to the Host found the Guest dead: time to read why."""


class SignalExit(BaseException):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


# L:310 The command line, by 2.6.23's rules, which are GNU getopt's plus one twist.  Options may
# come anywhere, repeat, and be abbreviated; "--" ends them.  The twist: the Launcher needed the
# memory size before it parsed any option (each device option made device pages right above
# RAM), so it took the first argument not starting with '-' and ran atoi() on it.  That's why
# options with values must be written --block=FILE: in "--block FILE" the FILE would have been
# taken for the memory size.  We refuse that form outright rather than guess.
# :*
class Options:
    def __init__(self):
        self.verbose = False
        self.help = False
        self.devices = []           # ("block" | "tunnet" | "sharenet", value), in order
        self.initrd = None
        self.paging = None
        self.stats = False
        self.mem_arg = None
        self.mem_mb = 0
        self.kernel = None
        self.kernel_args = []

    @property
    def cmdline(self):
        return "".join(a + " " for a in self.kernel_args)


_DMA_KEY = struct.Struct("<II")            # what read() returns: {dma, key}; also a request and its word
_IRQ_REQ = [_DMA_KEY.pack(abi.LHREQ_IRQ, irq) for irq in range(abi.LGUEST_IRQS)]
_LONG = {"verbose": None, "sharenet": "FILE", "tunnet": "IPV4|bridge:NAME", "block": "FILE",
         "initrd": "FILE", "paging": "shadow|direct", "stats": None, "help": None}


def _long_option(name):
    if name in _LONG:
        return name
    matches = [o for o in _LONG if o.startswith(name)] if name else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"option '--{name}' is ambiguous ({', '.join('--' + m for m in matches)})")
    raise UsageError(f"unknown option '--{name}'")


def atoi(s):
    """C's atoi(): leading blanks, a sign, digits; anything after is ignored ("64m" is 64)."""
    s = s.lstrip(" \t\n\v\f\r")
    sign, digits = 1, ""
    if s[:1] in "+-" and s[:1]:
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    for ch in s:
        if not "0" <= ch <= "9":
            break
        digits += ch
    return sign * int(digits) if digits else 0


def parse_args(argv):
    """argv without the program name -> Options; raises UsageError."""
    o = Options()
    o.mem_arg = next((a for a in argv if not a.startswith("-")), None)
    positional, only_positional = [], False
    for a in argv:
        if only_positional or a == "-" or not a.startswith("-"):
            positional.append(a)
        elif a == "--":
            only_positional = True
        elif a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            name = _long_option(name)
            if name == "help":
                o.help = True
                return o
            _take_long(o, name, eq, value)
        else:
            for ch in a[1:]:
                if ch == "v":
                    o.verbose = True
                elif ch == "h":
                    o.help = True
                    return o
                else:
                    raise UsageError(f"unknown option '-{ch}'")
    if o.mem_arg is None or not positional:
        raise UsageError("no memory size given")
    o.mem_mb = atoi(o.mem_arg)
    o.kernel = positional[1] if len(positional) > 1 else None
    o.kernel_args = positional[2:]
    return o


def _take_long(o, name, eq, value):
    meta = _LONG[name]
    if meta is None:
        if eq:
            raise UsageError(f"option '--{name}' takes no value")
        setattr(o, name, True)
        return
    if not eq:
        raise UsageError(f"option '--{name}' needs its value after '=': --{name}={meta}")
    if not value:
        raise UsageError(f"option '--{name}=' needs a {meta}")
    if name == "initrd":
        o.initrd = value
        return
    if name == "paging":
        if value not in ("shadow", "direct"):
            raise UsageError(f"--paging must be shadow or direct, not '{value}'")
        o.paging = value
        return
    if name == "tunnet":
        from .net import parse_tunnet
        try:
            parse_tunnet(value)
        except ValueError as e:
            raise UsageError(f"--tunnet: {e}") from None
    o.devices.append((name, value))
# :*


def default_kernel():
    """The bundled Guest OS, imported only when no KERNEL is named."""
    try:
        from launcher.guest.bundled import bundled_guest
    except ImportError as e:
        raise Fatal("no KERNEL given, and the bundled Guest OS is not available "
                    f"({e}): name a kernel, e.g. lguest 64 vmlinux") from None
    try:
        return bundled_guest()
    except Exception as e:                      # noqa: BLE001 - a build failure, say it in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Fatal(f"cannot build the bundled Guest OS: {first}") from None


DEVICE_PAGES = {"block": 1, "tunnet": 1, "sharenet": 1}


class Launcher:
    """One Guest: its memory, devices, the open Host, the run loop."""

    def __init__(self, opts, out=None):
        self.opts = opts
        self.out = out
        self.lg = None
        self.memory = None
        self.devices = None
        self.console = None
        self.waker = None
        self.kvm_path = os.environ.get(KVM_DEVICE_ENV) or "/dev/kvm"

    def verbose(self, msg):
        if self.opts.verbose:
            self.warn(msg)

    def warn(self, msg):
        out = self.out or sys.stderr
        out.write(f"lguest: {msg}\n")
        out.flush()

    # L:320 The layout of Guest-physical memory, built in 2.6.23's order: RAM is `mem` bytes, the
    # device descriptor page sits right at `mem` (the Guest looks for it at the end of RAM), and
    # each device's pages follow.  All of it is one buffer from guest_memory(), Guest-physical 0 at
    # its start; the Host's pfn_limit is its end, `top`.  Inside RAM: the kernel at its physical
    # addresses (1 MB for ours), the initrd at the very top, the initial page tables right below
    # that, the boot parameters at 0 and the command line at 0x1000.
    # :*
    def setup(self):
        o = self.opts
        if o.mem_mb < MIN_MEM_MB:
            raise Fatal(f"{o.mem_mb} MB of memory is too little ('{o.mem_arg}'): "
                        f"the minimum is {MIN_MEM_MB} MB")
        if o.mem_mb > MAX_MEM_MB:
            raise Fatal(f"{o.mem_mb} MB of memory is too much: the most is {MAX_MEM_MB} MB")
        if len(o.devices) + 1 > 16:
            raise Fatal("too many devices: the most is 16, counting the console")
        self.mem = o.mem_mb * MB
        self.top = self.mem + PAGE_SIZE * (1 + sum(DEVICE_PAGES[k] for k, _ in o.devices))
        import lguest_kvm
        self.memory = lguest_kvm.guest_memory(self.top)
        self.kernel = o.kernel or str(default_kernel())
        image = _read_file(self.kernel, "kernel")
        self.initrd_size = self._load_initrd() if o.initrd else 0
        self._load_kernel(image)
        try:
            self.pgdir = loader.setup_pagetables(self.memory, self.mem, self.initrd_size,
                                                 self.page_offset)
            loader.setup_boot_params(self.memory, self.mem, os.fsencode(o.cmdline),
                                     self.initrd_size)
        except loader.LoadError as e:
            raise Fatal(str(e)) from None
        self.verbose("Guest: %d MB, kernel %s ends at %#x, page_offset %#x, entry %#x, "
                     "page tables at %#x%s" % (
                         o.mem_mb, self.kernel, self.kernel_end, self.page_offset, self.entry,
                         self.pgdir, ", initrd %d bytes" % self.initrd_size if o.initrd else ""))

    def _load_initrd(self):
        path = self.opts.initrd
        try:
            with open(path, "rb") as f:
                length = os.fstat(f.fileno()).st_size
                if loader._page_up(length) > self.mem:
                    raise Fatal(f"initrd {path} ({length} bytes) does not fit in "
                                f"{self.opts.mem_mb} MB of memory")
                return loader.load_initrd_file(self.memory, self.mem, f, length)
        except OSError as e:
            raise Fatal(f"cannot read initrd {path}: {e.strerror}") from None
        except loader.LoadError as e:
            raise Fatal(f"initrd {path}: {e}") from None

    # L:330 Will it fit?  The kernel must end below the page tables, which sit below the initrd;
    # when it doesn't, we work out how much memory would have been enough and say so.
    # :*
    def _load_kernel(self, image):
        room = self.mem - self.initrd_size
        try:
            self.page_offset, self.entry, self.kernel_end = loader.load_kernel(
                self.memory, image, mem_size=room)
        except loader.KernelTooBig as e:
            self._too_big(e.end, 0xC0000000)
        except loader.LoadError as e:
            raise Fatal(f"{self.kernel}: {e}") from None
        if self.kernel_end > self.mem - self.initrd_size - \
                loader.pagetable_bytes(self.mem, self.page_offset):
            self._too_big(self.kernel_end, self.page_offset)

    def _too_big(self, end, page_offset):
        need = -(-(loader._page_up(end) + self.initrd_size) // MB)
        while loader._page_up(end) + self.initrd_size + \
                loader.pagetable_bytes(need * MB, page_offset) > need * MB:
            need += 1
        what = "the kernel and initrd do" if self.initrd_size else "the kernel does"
        raise Fatal(f"{what} not fit in {self.opts.mem_mb} MB of memory: "
                    f"{self.kernel} needs at least {need} MB")

    # L:340 The devices, in the order the options named them, and the console last of all, so it
    # is the last descriptor.  Each constructor checks its own argument and opens what it needs;
    # a failure is one line, like any other.
    # :*
    def create_devices(self):
        from .block import Block
        from .console import Console
        from .net import ShareNet, TunNet
        kinds = {"block": Block, "tunnet": TunNet, "sharenet": ShareNet}
        self.devices = DeviceList(self.memory, self.mem)
        for kind, value in self.opts.devices:
            kinds[kind](self.devices, value, self)     # errors are Fatal: one line
        self.console = Console(self.devices, self)
        self.verbose("device %d (irq %d): console" % (self.console.index, self.console.irq))
        assert self.devices.top == self.top

    # L:350 Opening the Host and telling it about the Guest: LHREQ_INITIALIZE with pfn_limit (the
    # number of pages the Guest may touch: RAM, the descriptor page and every device page), the
    # page directory, the entry point (a virtual address) and the page offset.  Opening is also
    # where a missing or forbidden /dev/kvm shows up, and where we can say how to fix it.
    # :*
    def open_host(self):
        import lguest_kvm
        try:
            self.lg = lguest_kvm.open(self.memory, kvm_path=self.kvm_path, paging=self.opts.paging)
        except OSError as e:
            if e.errno == errno.EINVAL and self.opts.paging:
                raise Fatal(f"--paging={self.opts.paging}: {e.strerror}") from None
            raise Fatal(_kvm_error(self.kvm_path, e)) from None
        self.verbose(f"Host: {self.kvm_path} ({self.lg.kind}), {self.lg.paging} paging")
        if self.opts.stats:
            self.lg.enable_stats()

    def initialize(self):
        try:
            r = self.lg.write(struct.pack("<5I", abi.LHREQ_INITIALIZE, self.top // PAGE_SIZE,
                                          self.pgdir, self.entry, self.page_offset))
        except OSError as e:
            raise Fatal(f"initializing the Guest: {e.strerror or os.strerror(e.errno)}") from None
        assert r == 16, r

    def start(self):
        from .waker import Waker
        self.initialize()
        self.waker = Waker(self.lg, [d.input_fd for d in self.devices.devices])
        self.waker.start()
        self.console.terminal.make_raw()

    # L:500 The main loop (2.6.23's run_guest).  read() runs the Guest, and comes back for one of
    # three reasons.  Eight bytes: the Guest sent a DMA to a key that is ours, {address of the
    # struct lguest_dma, key}; the device watching that key deals with it.  EAGAIN: the Waker saw
    # input; we service every device that has some, then release the Waker with BREAK 0.  ENOENT:
    # the Guest is dead, and the next read() says why.
    # :*
    def run(self):
        lg = self.lg
        while True:
            try:
                r = lg.read(8)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return self.death()
                if e.errno == errno.EINTR:
                    continue
                if e.errno != errno.EAGAIN:
                    raise Fatal(f"Running guest failed: {e.strerror}") from None
                try:
                    self.handle_input()
                    self.host_write("Resetting break", abi.LHREQ_BREAK, 0)
                except GuestDied:
                    return self.death()
                continue
            if len(r) != 8:
                return self.death(r)
            dma, key = _DMA_KEY.unpack(r)
            try:
                self.handle_output(dma, key)
            except GuestDied:
                return self.death()

    # L:510 Output: find the device watching this key and let it handle the DMA; what it returns
    # is the used_len the Guest will see.  A DMA to a key nobody watches gets a warning and is
    # otherwise ignored (used_len stays 0: nothing was taken).
    # :*
    def handle_output(self, dma, key):
        dev = self.devices.find_output(key)
        if dev is None:
            self.dma_iov(dma)                   # still a fatal error if it points outside
            self.warn("Pending dma %#x, key %#x" % (dma, key))
            return
        n = dev.handle_output(self, dma)
        if n is not None:
            self.devices.set_used_len(dma, n)

    # L:520 Input: poll every watched fd without waiting and service the ready ones, again and
    # again until none is ready (bounded, so a flood cannot starve the Guest).  A device that
    # returns False is done with input: we stop watching it and tell the Waker, before the BREAK 0
    # that releases it.
    # :*
    def handle_input(self):
        for _ in range(64):
            watched = {d.input_fd: d for d in self.devices.devices if d.input_fd >= 0}
            if not watched:
                return
            p = select.poll()
            for fd in watched:
                p.register(fd, select.POLLIN)
            ready = [fd for fd, ev in p.poll(0)]
            if not ready:
                return
            for fd in ready:
                dev = watched[fd]
                if not dev.handle_input(self):
                    dev.input_fd = -1
                    self.waker.ignore(fd)

    # L:530 Requests to the Host on the Guest's behalf.  GETDMA answers ENOENT both when the
    # Guest has no buffer bound and when it has just died (a bad buffer array kills it), so after
    # ENOENT we ask an IRQ we know is out of range: a live Guest says EINVAL, a dead one ENOENT.
    # :*
    def host_write(self, what, req, arg):
        return self._request(_DMA_KEY.pack(req, arg), what)

    def _request(self, data, what, *what_args):
        """write() a request: ENOENT is the Guest's death, any other error is fatal and says
        `what % what_args` (formatted only then: IRQs are on the hot path)."""
        try:
            return self.lg.write(data)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise GuestDied() from None
            raise Fatal(f"{what % what_args}: {e.strerror}") from None

    def getdma(self, key):
        """The gpa of a receive buffer the Guest bound to `key` (its IRQ in used_len), or None."""
        try:
            return self.lg.write(_DMA_KEY.pack(abi.LHREQ_GETDMA, key))
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise Fatal(f"GETDMA: {e.strerror}") from None
        try:
            self.lg.write(_DMA_KEY.pack(abi.LHREQ_IRQ, abi.LGUEST_IRQS))
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise GuestDied() from None
        return None

    def trigger_irq(self, irq):
        req = _IRQ_REQ[irq] if 0 <= irq < abi.LGUEST_IRQS else _DMA_KEY.pack(abi.LHREQ_IRQ, irq)
        self._request(req, "Triggering irq %d", irq)

    def dma_iov(self, dma):
        return self.devices.dma_iov(dma)        # InvalidAddress is Fatal, as in 2.6.23

    # L:540 Death.  The reason comes from one more read(): the Host's kill message, or the
    # Guest's own CRASH text.  2.6.23 printed it with errx() and exited 1; a Guest that powered
    # itself off is not an error, so that one exits 0.
    # :*
    def death(self, msg=None):
        if msg is None:
            try:
                msg = self.lg.read(1023)
            except OSError as e:
                raise Fatal(f"reading why the Guest died: {e.strerror}") from None
        reason = bytes(msg).split(b"\0", 1)[0].decode("latin-1").rstrip()
        if reason == POWER_DOWN:
            self.verbose("the Guest powered off")
            return 0
        raise Fatal(_printable(reason) or "the Guest died")

    # Everything the Launcher set up comes down here, on every way out.  The Waker goes first:
    # told to stop, released from a BREAK it may be waiting in, and given a moment to finish, so
    # that it is not in the middle of a request while the Host is being closed.
    def close(self):
        if self.waker is not None:
            self.waker.stop()
            if self.lg is not None:
                try:
                    self.lg.write(struct.pack("<II", abi.LHREQ_BREAK, 0))
                except OSError:
                    pass
                self.waker.join(0.2)
        if self.lg is not None:
            try:
                self.lg.close()
            except Exception:                   # noqa: BLE001 - we are leaving anyway
                pass
            report = self.lg.stats_report() if self.opts.stats else None
            if report:
                sys.stderr.write("lguest: " + report)
        if self.waker is not None:
            self.waker.join()
        if self.devices is not None:
            self.devices.close()
        elif self.console is not None:
            self.console.close()


def _read_file(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise Fatal(f"cannot read {what} {path}: {e.strerror}") from None


def _printable(s):
    return "".join(c if c.isprintable() else " " if c in "\t\n\r" else "\\x%02x" % ord(c)
                   for c in s)


def _kvm_error(path, e):
    if e.errno == errno.ENOENT:
        return (f"{path} does not exist: this machine has no KVM (load the kvm_intel or kvm_amd "
                "module, or turn on virtualization in the firmware)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return (f"no permission to open {path}: add your user to group kvm "
                "(sudo usermod -aG kvm $USER, then log in again), or run as root")
    return f"cannot use {path}: {e.strerror or os.strerror(e.errno)}"


# L:360 main(): the order of things, and the promise that however we leave — the Guest dying,
# an error, three ^C, SIGTERM or SIGHUP, an exception — the terminal gets its settings back, the
# disk files are flushed and the Waker is told to go.  A signal becomes an exception in the main
# thread (the Waker blocks them all); once we are tidying up, further signals just wait.
# :*
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts = parse_args(argv)
    except UsageError as e:
        sys.stderr.write(f"lguest: {e}; usage: {USAGE} (lguest --help explains)\n")
        return 1
    if opts.help:
        sys.stdout.write(HELP)
        return 0
    launcher = Launcher(opts)
    state = {"closing": False, "pending": None}

    def on_signal(signum, frame):
        if state["closing"]:
            state["pending"] = state["pending"] or signum
            return
        raise SignalExit(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    status, signum = 1, None
    try:
        try:
            launcher.setup()
            launcher.open_host()
            launcher.create_devices()
            launcher.start()
            status = launcher.run()
        finally:
            state["closing"] = True
            launcher.close()
    except Fatal as e:
        sys.stderr.write(f"lguest: {e}\n")
        status = e.status
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except SignalExit as e:
        signum = e.signum
    except Exception as e:                      # noqa: BLE001 - a bug, but still one line
        if opts.verbose:
            import traceback
            traceback.print_exc()
        sys.stderr.write(f"lguest: internal error: {type(e).__name__}: {e}\n")
        status = 1
    signum = signum or state["pending"]
    for s, h in old.items():
        signal.signal(s, h)
    if signum is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum
    return status
# :*


if __name__ == "__main__":
    sys.exit(main())
