"""The lguest command end to end: `python -m launcher` booting small test Guests on /dev/kvm.

The console is a pty, so the tests see what a user sees: the terminal switched to raw mode while
the Guest runs and restored afterwards, keystrokes delivered through GETDMA and the console IRQ,
and the exit status for power-off, a Guest's death, three ^C and signals.
"""
import gzip
import hashlib
import os
import pty
import random
import select
import signal
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import psutil
import pytest

from launcher import loader

sys.path.insert(0, str(Path(__file__).parent))
from guestrun import build   # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20
pytestmark = pytest.mark.kvm


class Run:
    """The Launcher with stdin and stdout on a pty (or stdin on a pipe), stderr in a file."""

    def __init__(self, *args, stdin="pty", env=None, prefix=()):
        self.master, self.slave = pty.openpty()
        self.tty_before = termios.tcgetattr(self.slave)
        self.err = tempfile.TemporaryFile()
        e = dict(os.environ, PYTHONPATH=str(ROOT))
        e.update(env or {})
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "launcher", *map(str, args)], cwd=ROOT, env=e,
            stdin=self.slave if stdin == "pty" else stdin, stdout=self.slave, stderr=self.err)
        self.out = b""

    def _read(self, timeout):
        r, _, _ = select.select([self.master], [], [], timeout)
        if r:
            self.out += os.read(self.master, 65536)
            return True
        return False

    def expect(self, text, timeout=20, count=1):
        text = text.encode() if isinstance(text, str) else text
        end = time.monotonic() + timeout
        while self.out.replace(b"\r\n", b"\n").count(text) < count:
            left = end - time.monotonic()
            if left <= 0 or (not self._read(min(left, 0.5)) and self.proc.poll() is not None
                             and not self._read(0.2)):
                raise AssertionError(f"no {text!r} (x{count}) in the console: {self.out!r}; "
                                     f"stderr {self.stderr()!r}")
        return time.monotonic() - self.t0

    def type(self, data):
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def lflag(self):
        return termios.tcgetattr(self.slave)[3]

    def wait(self, timeout=20):
        rc = self.proc.wait(timeout)
        while self._read(0.05):
            pass
        return rc

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode()

    @property
    def text(self):
        return self.out.decode("latin-1").replace("\r\n", "\n")

    def restored(self):
        return termios.tcgetattr(self.slave) == self.tty_before

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)
        self.err.close()


@pytest.fixture(scope="module")
def ln_console():
    return build("ln_console.c")


@pytest.fixture(scope="module")
def ln_block():
    return build("ln_block.c")


RAW_BITS = termios.ICANON | termios.ECHO | termios.ISIG


def test_console_session(run, ln_console, record_property):
    r = run(4, ln_console, "a", "b")
    first = r.expect("ln: hello, cmdline [a b ]\n")
    record_property("first_console_line_seconds", round(first, 3))
    print(f"\nfirst console line after {first:.3f} s")
    r.expect("ln: ready")
    assert "ln: dev 0 type 1 features 0 pages 0 pfn 0" in r.text     # only the console
    assert r.lflag() & RAW_BITS == 0                                 # raw while running
    r.type("hello world\n")
    r.expect("ln: got [hello world]")
    r.type("unbind\n")
    r.expect("ln: unbound")
    r.type("lost\n")                                                 # nowhere to put it
    r.expect("ln: rebound")
    r.type("nokey\n")
    r.expect("ln: nokey used_len 0")
    r.type("again\n")
    r.expect("ln: got [again]")
    r.type("quit\n")
    assert r.wait() == 0
    assert r.text.endswith("ln: bye\n")
    assert "[lost]" not in r.text
    assert r.stderr().splitlines() == ["lguest: console: no dma buffer!",
                                       "lguest: Pending dma %#x, key 0x1000" % _pending(r)]
    assert r.restored()


def _pending(r):
    for line in r.stderr().splitlines():
        if line.startswith("lguest: Pending dma "):
            return int(line.split()[3].rstrip(","), 16)
    return -1


def test_guest_death_is_one_line_and_status_1(run, ln_console):
    r = run(4, ln_console)
    r.expect("ln: ready")
    r.type("die\n")
    assert r.wait() == 1
    assert r.stderr() == "lguest: CRASH: ln was told to die\n"
    assert r.restored()


def test_invalid_dma_address_ends_the_launcher(run, ln_console):
    r = run(4, ln_console)
    r.expect("ln: ready")
    r.type("baddma\n")
    assert r.wait() == 1
    assert r.stderr() == "lguest: Invalid address 0xfffff000\n"
    assert "still here" not in r.text
    assert r.restored()


def test_three_ctrl_c_exit_2(run, ln_console):
    r = run(4, ln_console)
    r.expect("ln: ready")
    for i in range(3):                      # spread over more than a second: no exit
        r.type(b"\x03")
        r.expect("ln: ctrl-c", count=i + 1)
        time.sleep(0.55)
    assert r.proc.poll() is None
    r.type("x\n")                           # something else in between resets the count
    r.expect("ln: got [x]")
    for i in range(3):
        r.type(b"\x03")
        if i < 2:
            r.expect("ln: ctrl-c", count=4 + i)
        time.sleep(0.05)
    assert r.wait() == 2
    assert r.stderr() == ""
    assert r.restored()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_restores_terminal(run, ln_console, sig):
    r = run(4, ln_console)
    r.expect("ln: ready")
    assert r.lflag() & RAW_BITS == 0
    r.proc.send_signal(sig)
    assert r.wait() == -sig
    assert r.restored()
    assert "Traceback" not in r.stderr() and r.stderr() == ""


def test_stdin_eof_stops_watching_it(run, ln_console):
    r = run(4, ln_console, stdin=subprocess.PIPE)
    r.expect("ln: ready")
    r.proc.stdin.write(b"piped\nquit")      # the last line never ends: no quit
    r.proc.stdin.close()                    # EOF right behind the data: the data still arrives
    r.expect("ln: got [piped]")
    p = psutil.Process(r.proc.pid)
    before = p.cpu_times()
    time.sleep(1.0)
    after = p.cpu_times()
    busy = (after.user + after.system) - (before.user + before.system)
    assert r.proc.poll() is None and busy < 0.3, busy     # halted, and nobody spinning on EOF
    r.proc.terminate()
    assert r.wait() == -signal.SIGTERM


# --- block ------------------------------------------------------------------------------------

def _expected_disk(size):
    disk = bytearray(b"\xee" * size)
    for sector in range(11):
        for i in range(512):
            disk[sector * 512 + i] = ((sector * 7 + i * 13) ^ 0x5A) & 0xFF
    return bytes(disk)


def test_block_device(run, ln_block, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xee" * 65536)
    r = run("-v", f"--block={disk}", 4, ln_block, stdin=subprocess.DEVNULL)
    assert r.wait() == 0, r.stderr()
    assert "ln: block dev 0 features 8000 sectors 128\n" in r.text
    assert "ln: writes 1 1 1\n" in r.text
    assert "ln: reads 1 1 used 512 match 1 1\n" in r.text
    assert "ln: refused 2 2 2 2 2 2 2\n" in r.text
    data = disk.read_bytes()
    assert len(data) == 65536                               # never extended
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(_expected_disk(65536)).hexdigest()
    err = r.stderr()
    if any("device 0" in line and line.endswith("O_DIRECT") for line in err.splitlines()):
        assert "block: WRITE 4096 bytes at sector 0 (O_DIRECT)" in err
        assert "block: READ 5120 bytes at sector 0 (O_DIRECT)" in err
    assert "block: WRITE 512 bytes at sector 10 (buffered)" in err     # an unaligned buffer
    assert err.count("block: refused:") == 7


# --- bzImage and initrd -------------------------------------------------------------------------

def make_bzimage(elf):
    """A bzImage-like file: junk setup bytes, the gzipped loaded image (OS byte 3), a trailer."""
    data = Path(elf).read_bytes()
    mem = bytearray(8 * MB)
    loader.load_elf(mem, data)
    flat = bytes(mem[0x100000:loader.elf_end(data)])
    assert loader.intuit_page_offset(flat, len(flat)) == 0xC0000000
    gz = bytearray(gzip.compress(flat, mtime=0))
    gz[9] = 3
    return b"\xeb\x3c\x90" + b"setup code" * 50 + bytes(gz) + b"\x00\xff trailing decompressor"


def test_bzimage_and_initrd(run, ln_console, tmp_path):
    bz = tmp_path / "bzImage"
    bz.write_bytes(make_bzimage(ln_console))
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"INITRD" + bytes(4994))                     # 5000 bytes: 2 pages
    r = run(f"--initrd={initrd}", 4, bz, "console=hvc0")
    r.expect("ln: ready")
    assert "ln: hello, cmdline [console=hvc0 ]" in r.text
    r.type("initrd\n")
    r.expect("ln: initrd type ff at 3fe000 size 2000 first [INITRD]")
    r.type("quit\n")
    assert r.wait() == 0
    assert r.stderr() == ""


def test_devices_in_option_order_console_last(run, ln_console, tmp_path):
    a, b, net = tmp_path / "a", tmp_path / "b", tmp_path / "net"
    a.write_bytes(bytes(4096))
    b.write_bytes(bytes(8192))
    r = run(f"--block={a}", 8, f"--sharenet={net}", ln_console, f"--block={b}")
    r.expect("ln: ready")
    first = 8 * MB // 4096 + 1
    assert r.text.splitlines()[2:6] == [
        f"ln: dev 0 type 3 features 8000 pages 1 pfn {first:x}",
        f"ln: dev 1 type 2 features 4000 pages 1 pfn {first + 1:x}",
        f"ln: dev 2 type 3 features 8000 pages 1 pfn {first + 2:x}",
        "ln: dev 3 type 1 features 0 pages 0 pfn 0"]
    r.type("quit\n")
    assert r.wait() == 0


# --- input while the Guest is running ---------------------------------------------------------

def test_input_while_the_guest_is_busy(run):
    """The Waker's BREAK stops a running Guest anywhere, not only at a hypercall: every line must
    still arrive once, in order (this found a Host bug, fixed in a246b64)."""
    r = run(4, build("ln_busy.c"))
    r.expect("ln: busy ready")
    rng = random.Random(1)
    for i in range(150):
        r.type(f"line{i}\n")
        r.expect(f"> line{i}\n", timeout=3)
        time.sleep(rng.random() * 0.01)
    r.type("quit\n")
    assert r.wait() == 0
    assert r.text.endswith("ln: 151 lines\n")



def test_stats_on_exit(run, ln_console):
    """--stats: after the Guest powers off, a table of exits by kind and hypercalls by number,
    whose counts add up to what the Host saw."""
    r = run("--stats", 4, ln_console)
    r.expect("ln: ready")
    r.type("quit\n")
    assert r.wait() == 0
    err = r.stderr()
    lines = err.splitlines()
    head = lines[0]
    assert head.startswith("lguest: exit statistics (") and " paging): " in head, err
    exits = int(head.split("paging): ")[1].split()[0])
    i = lines.index(next(ln for ln in lines if ln.split()[:2] == ["hypercall", "count"]))
    kinds = {ln[:42].strip(): int(ln[42:53]) for ln in lines[2:i]}
    calls = {ln[:42].strip(): int(ln[42:53]) for ln in lines[i + 1:]}
    assert sum(c for k, c in kinds.items() if not k.startswith("HALT")) == exits
    # ln_console bound its console buffer, sent its lines and crashed with "Power down".
    assert calls["LHCALL_BIND_DMA (12)"] >= 1 and calls["LHCALL_CRASH (2)"] == 1
    assert calls["LHCALL_SEND_DMA (13)"] >= 4                  # hello, mem, dev, ready, bye...
    assert any("hypercall (int $0x1f)" in k for k in kinds)


# --- block devices under faults ---------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs of one page at tmp_path/fs (root only), unmounted afterwards."""
    if os.getuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_block_file_read_only(run, ln_block, tmp_path):
    """A disk file we may only read: the device still works, every write gets result 2 with the
    reason on stderr, and the file is untouched."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xee" * 65536)
    if os.getuid() == 0:                  # root may write any file: make it immutable instead
        r = subprocess.run(["chattr", "+i", str(disk)], capture_output=True)
        if r.returncode:
            pytest.skip("cannot make a file read-only for root here: %s" % r.stderr.decode().strip())
    else:
        disk.chmod(0o444)
    try:
        r = run(f"--block={disk}", 4, ln_block, stdin=subprocess.DEVNULL)
        assert r.wait() == 0, r.stderr()
        err = r.stderr()
    finally:
        if os.getuid() == 0:
            subprocess.run(["chattr", "-i", str(disk)])
    assert "ln: writes 2 2 2\n" in r.text
    assert "ln: reads 1 1 used 512" in r.text                # reading still works
    assert "read-only, the Guest's writes will fail" in err and "write refused" in err
    assert disk.read_bytes() == b"\xee" * 65536


def test_block_file_on_a_full_filesystem(run, ln_block, small_tmpfs):
    """A sparse disk on a tmpfs with room for one page: the first write fills it, the next ones
    fail with result 2 and "No space left on device", and what was written stays written."""
    disk = small_tmpfs / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(65536)
    r = run(f"--block={disk}", 4, ln_block, stdin=subprocess.DEVNULL)
    assert r.wait() == 0, r.stderr()
    assert "ln: writes 1 2 2\n" in r.text, r.text
    assert "No space left on device" in r.stderr()
    assert disk.read_bytes()[:4096] == _expected_disk(65536)[:4096]
