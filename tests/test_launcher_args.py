"""The lguest command line (2.6.23's rules), its one-line errors, and the loader's bzImage path.

Nothing here needs /dev/kvm: every error below is found before the Host is opened, and the KVM
device itself is pointed at a path that does not exist with LGUEST_KVM_DEVICE.
"""
import errno
import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import loader, main as lmain
from launcher.main import UsageError, parse_args, atoi

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20


def lguest(*args, env=None, stdin=subprocess.DEVNULL, timeout=30):
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "launcher", *map(str, args)], cwd=ROOT, env=e,
                          stdin=stdin, capture_output=True, text=True, timeout=timeout)


def one_line_error(r, status=1):
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("lguest: "), r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr.strip()


def make_elf(segments):
    """segments: (vaddr, paddr, data, memsz) -> a minimal i386 ET_EXEC."""
    phoff, off = 52, 52 + 32 * len(segments)
    ph, body = b"", b""
    for vaddr, paddr, data, memsz in segments:
        ph += struct.pack("<8I", 1, off + len(body), vaddr, paddr, len(data), memsz, 7, 0x1000)
        body += data
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    eh = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, 3, 1, 0xC0100000, phoff, 0, 0, 52, 32,
                     len(segments), 40, 0, 0)
    return eh + ph + body


# --- parsing ----------------------------------------------------------------------------------

def test_permuted_repeated_options_in_order():
    o = parse_args(["--block=a.img", "-v", "64", "--sharenet=net", "vmlinux", "root=/dev/lgba",
                    "--block=b.img", "--tunnet=10.0.0.1", "ro", "--initrd=i1", "--initrd=i2"])
    assert o.verbose and o.mem_mb == 64 and o.kernel == "vmlinux"
    assert o.devices == [("block", "a.img"), ("sharenet", "net"), ("block", "b.img"),
                         ("tunnet", "10.0.0.1")]
    assert o.kernel_args == ["root=/dev/lgba", "ro"]
    assert o.cmdline == "root=/dev/lgba ro "           # a space after each, as 2.6.23 joined them
    assert o.initrd == "i2"                           # the last one wins


def test_memory_is_atoi_of_first_non_option():
    assert parse_args(["64m", "k"]).mem_mb == 64
    assert parse_args(["--initrd=x", "16", "k"]).mem_mb == 16
    assert parse_args(["abc", "k"]).mem_mb == 0
    assert parse_args(["32"]).kernel is None                  # the bundled Guest
    assert parse_args(["32"]).cmdline == ""
    assert [atoi(s) for s in ("64m", " 12", "+7x", "-3", "", "m64", "0x10")] == \
        [64, 12, 7, -3, 0, 0, 0]


def test_double_dash_and_abbreviations():
    o = parse_args(["64", "k", "--", "-s", "--block=x"])
    assert o.devices == [] and o.kernel_args == ["-s", "--block=x"]
    o = parse_args(["--bl=d", "--verb", "--tun=bridge:br0", "--sh=f", "--init=i", "8", "k"])
    assert o.devices == [("block", "d"), ("tunnet", "bridge:br0"), ("sharenet", "f")]
    assert o.verbose and o.initrd == "i"
    assert parse_args(["-vv", "8", "k"]).verbose


@pytest.mark.parametrize("argv, message", [
    ([], "no memory size"),
    (["-v"], "no memory size"),
    (["--block", "disk", "64", "k"], "needs its value after '='"),
    (["--block=", "64", "k"], "needs a FILE"),
    (["--verbose=yes", "64", "k"], "takes no value"),
    (["--frobnicate", "64", "k"], "unknown option '--frobnicate'"),
    (["-x", "64", "k"], "unknown option '-x'"),
    (["--tunnet=10.0.0", "64", "k"], "neither an IPv4 address nor bridge:NAME"),
    (["--tunnet=bridge:", "64", "k"], "bad bridge name"),
    (["--paging=nested", "64", "k"], "--paging must be shadow or direct"),
    (["--", "64"], None),
])
def test_bad_command_lines(argv, message):
    if message is None:                               # "--" then memory: fine
        assert parse_args(argv).mem_mb == 64
        return
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def test_help_wins_wherever_it_is():
    assert parse_args(["64", "k", "--help"]).help
    assert parse_args(["-h"]).help
    assert parse_args(["--he"]).help


def test_usage_and_help_from_the_command():
    r = lguest()
    msg = one_line_error(r)
    assert "no memory size given" in msg and "usage: lguest [--verbose|-v]" in msg
    r = lguest("--block", "x", "64")
    assert "usage:" in one_line_error(r)
    r = lguest("--help")
    assert r.returncode == 0 and r.stderr == ""
    for word in ("--verbose", "-v", "--block=FILE", "--tunnet=IPV4", "--tunnet=bridge:NAME",
                 "--sharenet=FILE", "--initrd=FILE", "MEM_MB", "KERNEL", "ARGS", "--help",
                 "LGUEST_KVM_DEVICE", "Three ^C", "exit"):
        assert word in r.stdout, word


# --- one-line errors, before the Host is opened -------------------------------------------------

@pytest.fixture(scope="module")
def ln_console():
    sys.path.insert(0, str(Path(__file__).parent))
    from guestrun import build
    return build("ln_console.c")


def test_not_a_kernel(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"MZ this is not a kernel" * 100)
    msg = one_line_error(lguest(64, junk))
    assert msg == f"lguest: {junk}: not an ELF or bzImage kernel (no ELF header, and no " \
                  "gzip-compressed kernel inside)"
    msg = one_line_error(lguest(64, tmp_path / "missing"))
    assert "cannot read kernel" in msg and "No such file" in msg


def test_no_genuine_lguest(tmp_path):
    k = tmp_path / "plain"
    k.write_bytes(make_elf([(0xC0100000, 0x100000, b"\x90" * 64 + b"GenuinLguest", 4096)]))
    assert one_line_error(lguest(8, k)) == f'lguest: {k}: No "GenuineLguest" in the kernel'


def test_too_little_memory(ln_console):
    assert one_line_error(lguest(1, ln_console)) == \
        "lguest: 1 MB of memory is too little ('1'): the minimum is 2 MB"
    assert "the minimum is 2 MB" in one_line_error(lguest("none", ln_console))
    assert "too much" in one_line_error(lguest(5000, ln_console))


def test_kernel_that_does_not_fit(tmp_path):
    k = tmp_path / "big"
    k.write_bytes(make_elf([(0xC0100000, 0x100000, b"GenuineLguest\xf4", 5 * MB)]))
    assert one_line_error(lguest(4, k)) == \
        f"lguest: the kernel does not fit in 4 MB of memory: {k} needs at least 7 MB"
    init = tmp_path / "initrd"
    init.write_bytes(b"i" * (2 * MB))
    assert f"{k} needs at least 9 MB" in one_line_error(lguest(f"--initrd={init}", 8, k))
    assert "do not fit in 2 MB" in one_line_error(lguest(f"--initrd={init}", 2, k))


def test_missing_kvm_device(ln_console):
    r = lguest(16, ln_console, env={"LGUEST_KVM_DEVICE": "/nonexistent/kvm"})
    msg = one_line_error(r)
    assert msg.startswith("lguest: /nonexistent/kvm does not exist: this machine has no KVM")
    assert "kvm_intel" in msg


@pytest.mark.kvm
def test_paging_backend_choice(ln_console):
    """--paging picks the backend and -v says which one runs; direct on a KVM that cannot page in
    32-bit mode is one clear line."""
    import lguest_kvm

    def verbose_start(paging):
        """The Launcher's -v lines up to the running Guest (which waits for input forever)."""
        try:
            r = lguest("-v", f"--paging={paging}", 16, ln_console, timeout=10)
        except subprocess.TimeoutExpired as e:
            err = e.stderr or b""
            return err.decode() if isinstance(err, bytes) else err
        raise AssertionError("the Guest ended: %r" % r.stderr)
    assert parse_args(["--paging=direct", "64"]).paging == "direct"
    assert "shadow paging" in verbose_start("shadow")
    if lguest_kvm.kvm_kind() in ("vmx", "svm"):
        assert "direct paging" in verbose_start("direct")
        return
    msg = one_line_error(lguest("--paging=direct", 16, ln_console))
    assert msg.startswith("lguest: --paging=direct: direct paging needs hardware KVM"), msg


def test_kvm_error_messages():
    eacces = lmain._kvm_error("/dev/kvm", OSError(errno.EACCES, "no"))
    assert "no permission to open /dev/kvm" in eacces and "group kvm" in eacces
    assert "\n" not in eacces
    other = lmain._kvm_error("/dev/kvm", OSError(errno.ENOTTY, "KVM_GET_API_VERSION: nope"))
    assert other == "cannot use /dev/kvm: KVM_GET_API_VERSION: nope"


def test_unusable_kvm_device_is_one_line(ln_console, tmp_path):
    fake = tmp_path / "kvm"
    fake.write_bytes(b"")
    msg = one_line_error(lguest(16, ln_console, env={"LGUEST_KVM_DEVICE": str(fake)}))
    assert msg.startswith(f"lguest: cannot use {fake}:")


def test_default_kernel_is_the_bundled_guest(monkeypatch):
    import importlib
    try:
        importlib.import_module("launcher.guest.bundled")
    except ImportError:
        r = lguest(16, env={"LGUEST_KVM_DEVICE": "/nonexistent/kvm"})
        assert "bundled Guest OS is not available" in one_line_error(r)
        return
    # It exists: "lguest 16" loads it, and only then looks for KVM.
    r = lguest(16, env={"LGUEST_KVM_DEVICE": "/nonexistent/kvm"}, timeout=300)
    assert "does not exist: this machine has no KVM" in one_line_error(r)


# --- the loader: bzImage ---------------------------------------------------------------------

def gz_unix(data):
    gz = bytearray(gzip.compress(data, mtime=0))
    gz[9] = loader.GZIP_OS_UNIX
    return bytes(gz)


def test_find_gzip_header_follows_2623():
    body = gz_unix(b"x")
    assert loader.find_gzip_header(b"abc" + body) == 3
    # 2.6.23's state machine: a 1F right after a 1F does not start a header.
    with pytest.raises(loader.LoadError, match="not an ELF or bzImage"):
        loader.find_gzip_header(b"\x1f" + body)          # so a stray 1F hides the header
    assert loader.find_gzip_header(b"\x1f\x1f" + body) == 2       # even run: the third 1F starts
    with pytest.raises(loader.LoadError, match="not an ELF or bzImage"):
        loader.find_gzip_header(b"\x1f\x1f\x8b" + bytes(20))           # odd run of 2: no header
    other_os = bytearray(body)
    other_os[9] = 255
    with pytest.raises(loader.LoadError, match="not marked as compressed on Unix"):
        loader.find_gzip_header(b"hdr" + bytes(other_os) + body)      # the FIRST header counts
    with pytest.raises(loader.LoadError, match="not an ELF or bzImage"):
        loader.find_gzip_header(b"\x1f\x8b\x08")


def test_intuit_page_offset():
    code = b"\x90\xa1\x00\x00\x00\x11" * 3 + b"\xa1\x10\x20\x30\xc0" * 4
    assert loader.intuit_page_offset(code, len(code)) == 0xC0000000
    with pytest.raises(loader.LoadError, match="page offset"):
        loader.intuit_page_offset(b"\xa1\x00\x00\x00\xc0" * 3, 15)


def make_flat_kernel(body=b"\x90" * 32):
    flat = b"GenuineLguest" + body + b"\xa1\x00\x10\x00\xc0" * 4
    return flat


def test_load_bzimage_with_trailer_and_too_big():
    flat = make_flat_kernel()
    image = b"\xeb\x3c" + bytes(500) + b"HdrS" + gz_unix(flat) + b"more setup code after it"
    mem = bytearray(4 * MB)
    assert loader.load_kernel(mem, image, mem_size=4 * MB) == \
        (0xC0000000, 0xC0100000 + 13, 0x100000 + len(flat))
    assert mem[0x100000:0x100000 + len(flat)] == flat
    big = make_flat_kernel(bytes(3 * MB))
    with pytest.raises(loader.KernelTooBig) as e:
        loader.load_kernel(bytearray(4 * MB), gz_unix(big), mem_size=3 * MB)
    assert e.value.end == 0x100000 + len(big)
    with pytest.raises(loader.LoadError, match="truncated"):
        loader.load_kernel(bytearray(4 * MB), gz_unix(flat)[:-20], mem_size=4 * MB)
    with pytest.raises(loader.LoadError, match="GenuineLguest"):
        loader.load_kernel(bytearray(4 * MB), gz_unix(b"\xa1\x00\x00\x00\xc0" * 4), mem_size=4 * MB)


def test_load_initrd_file(tmp_path):
    f = tmp_path / "initrd"
    f.write_bytes(b"R" * 5000)
    mem = bytearray(MB)
    with open(f, "rb") as fo:
        assert loader.load_initrd_file(mem, MB, fo, 5000) == 8192
    assert mem[MB - 8192:MB - 8192 + 5000] == b"R" * 5000 and not any(mem[MB - 3192:])
