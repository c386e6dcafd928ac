"""QEMU baselines for lguest-bench: the mechanisms that need no lguest ABI, run by QEMU on KVM."""
# M:983 The third kind of baseline.  The C baselines show what a mechanism cannot be cheaper
# than on this host; QEMU shows what the usual way of running a Guest charges for the same
# thing.  Four of lguest's benchmarks have a counterpart that needs nothing of lguest's ABI: a
# port read the hypervisor must emulate, a system call from CPL 3, a page fault the Guest
# kernel handles itself, and plain stores through memory.  A tiny multiboot kernel,
# lguest_bench/guests/qemu_guest.c, runs each one under `qemu-system-i386 -accel kvm`.
#
# Nothing here installs QEMU: where it is missing, or where KVM cannot run what the Guest
# needs (kvm-pvm refuses 32-bit paging and emulates no `iret`), each benchmark says why in one
# line instead of giving a figure.
# :*
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import selectors
import shutil
import signal
import subprocess
import tempfile
import time

from launcher.guest.build import CC, CFLAGS, LD, LDFLAGS, GuestBuildError, cache_dir, compiler_version

HERE = pathlib.Path(__file__).resolve().parent
GUEST_SOURCE = HERE / "guests" / "qemu_guest.c"
# QEMU's multiboot loader puts each PT_LOAD at its physical address: all of it at 1 MiB, one to
# one, the multiboot header first.  (Kept here, not in a file, so it always ships with the code.)
GUEST_LDS = """\
OUTPUT_FORMAT("elf32-i386")
ENTRY(_start)
SECTIONS
{
	. = 0x100000;
	.text : { *(.multiboot) *(.text .text.*) }
	.rodata : { *(.rodata .rodata.*) }
	.data : { *(.data .data.*) }
	.bss : { *(.bss .bss.*) *(COMMON) }
	/DISCARD/ : { *(.note*) *(.comment) *(.eh_frame) }
}
"""
QEMU_NAMES = ("qemu-system-i386", "qemu-system-x86_64")
MEMBURN_MB = {False: 64, True: 8}

QEMU_BENCHES = {
    "qemu-pio": "an `inb` from an unhandled port (0x80): an exit to QEMU",
    "qemu-syscall": "`int $0x80` from CPL 3 to a DPL 3 trap gate, `iret` back",
    "qemu-pagefault": "a #PF from an unmapped page, handled by the Guest kernel",
    "qemu-memburn": "a store per 64-byte line through 64 MiB (8 MiB with --quick)",
}
# name: (mode, N full, N quick, laps full, laps quick); memburn's N is ignored: one op is a pass.
_PLAN = {
    "qemu-pio": (1, 5000, 500, 7, 5),
    "qemu-syscall": (2, 100000, 20000, 7, 5),
    "qemu-pagefault": (3, 100000, 20000, 7, 5),
    "qemu-memburn": (4, 1, 1, 5, 3),
}
BOOT_TIMEOUT = 60.0             # SeaBIOS alone takes about 5 s where KVM emulates every instruction


class QemuError(RuntimeError):
    """A QEMU baseline could not be measured; str() is the one-line reason."""


def find_qemu() -> str | None:
    """The QEMU that runs the baselines: qemu-system-i386, else qemu-system-x86_64, or None."""
    for name in QEMU_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


# M:984 The Guest is built the way every Guest here is, with the system gcc in 32-bit
# freestanding mode, but linked by its own script (GUEST_LDS): QEMU's multiboot loader wants a
# plain ELF at 1 MiB with the multiboot header near the front, not lguest's layout above
# 0xC0000000.  The result is cached by a hash of the source, the script and the compiler.
# :*
def build_qemu_guest() -> pathlib.Path:
    """Compile lguest_bench/guests/qemu_guest.c into a multiboot ELF (cached); return its path."""
    src, lds = GUEST_SOURCE.read_bytes(), GUEST_LDS.encode()
    h = hashlib.sha256()
    for part in (src, lds, " ".join(CFLAGS + LDFLAGS).encode(), compiler_version().encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    out = cache_dir() / "bench" / f"qemu-guest-{h.hexdigest()[:16]}.elf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".qemu-guest-", dir=out.parent) as tmp:
        obj, elf = pathlib.Path(tmp, "qemu_guest.o"), pathlib.Path(tmp, "qemu_guest.elf")
        script = pathlib.Path(tmp, "qemu_guest.lds")
        script.write_text(GUEST_LDS)
        for cmd, what in (([CC, *CFLAGS, "-c", str(GUEST_SOURCE), "-o", str(obj)], "compiling"),
                          ([LD, *LDFLAGS, "-T", str(script), "-o", str(elf), str(obj)], "linking")):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise GuestBuildError(f"{what} the QEMU Guest: {e}") from None
            if r.returncode:
                raise GuestBuildError(f"{what} the QEMU Guest failed (exit {r.returncode})",
                                      (r.stderr + r.stdout).strip())
        os.replace(elf, out)
    return out


def qemu_command(qemu, image, args, mem_mb=128):
    return [qemu, "-accel", "kvm", "-machine", "pc", "-m", str(mem_mb),
            "-display", "none", "-nodefaults", "-monitor", "none", "-serial", "none",
            "-parallel", "none", "-no-reboot", "-debugcon", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", str(image), "-append", args]


# M:988 Running it.  The Guest's debug console is QEMU's standard output, a pipe we read as it
# fills: each '.' is the end of a lap and gets the time it arrived.  Standard error is read at the
# same time, because when KVM gives up (an instruction its emulator refuses) QEMU prints "KVM
# internal error" and then pauses the Guest forever rather than exiting.  So every run ends one
# of four ways, and only the first one yields figures: the Guest writes to isa-debug-exit
# (exit status 1 for value 0), the Guest reports a problem ('!' line, status 3), KVM fails (we
# kill QEMU), or the deadline passes (we kill QEMU).
# :*
def _one_line(text):
    return " ".join(text.split())


_OPCODES = {"cf": "iret", "cd": "int n", "ea": "ljmp", "cb": "lret", "ca": "lret"}


def _kvm_failure(err):
    """One line from QEMU's report of a KVM internal error."""
    lines = err.splitlines()
    what = [ln.strip() for ln in lines
            if ln.startswith("KVM internal error") or ln.strip() == "emulation failure"]
    where = next((w for ln in lines for w in ln.split() if w.startswith("EIP=")), "")
    code = next((ln for ln in lines if ln.startswith("Code=") and "<" in ln), "")
    if code:
        insn = code.split("<", 1)[1].replace(">", "").split()[:4]
        where += f" ({' '.join(insn)}{': ' + _OPCODES[insn[0]] if insn[0] in _OPCODES else ''})"
    return ", ".join(what) + (f" at {where.strip()}" if where else "")


def run_qemu(args, timeout, qemu=None):
    """Boot the Guest with command line `args`; return the arrival times of its markers.

    Raises QemuError with a one-line reason when QEMU, KVM or the Guest fails, or on timeout."""
    qemu = qemu or find_qemu()
    if qemu is None:
        raise QemuError("qemu-system-i386 not installed")
    try:
        image = build_qemu_guest()
    except GuestBuildError as e:
        raise QemuError(f"cannot build the QEMU Guest: {_one_line(str(e))[:200]}") from None
    try:
        p = subprocess.Popen(qemu_command(qemu, image, args), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        raise QemuError(f"cannot run {qemu}: {e.strerror}") from None
    marks, out, err = [], bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    why = None
    sel = selectors.DefaultSelector()
    try:
        sel.register(p.stdout, selectors.EVENT_READ, out)
        sel.register(p.stderr, selectors.EVENT_READ, err)
        kvm_failed_at = None
        while sel.get_map():
            now = time.monotonic()
            if kvm_failed_at is not None and now - kvm_failed_at > 0.5:
                break                   # QEMU has said all it will; the Guest is paused
            if now > deadline:
                why = f"no result after {timeout:.0f} s (QEMU killed)"
                break
            for key, _ in sel.select(timeout=0.1 if kvm_failed_at else min(1.0, deadline - now)):
                data = os.read(key.fd, 65536)
                t = time.perf_counter()
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                if key.data is out:
                    marks += [t] * data.count(b".")
                key.data.extend(data)
                if kvm_failed_at is None and b"KVM internal error" in err:
                    kvm_failed_at = time.monotonic()
    finally:
        sel.close()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        status = p.wait()
        p.stdout.close()
        p.stderr.close()
    err_text = err.decode("latin-1")
    guest_lines = [ln.lstrip(".")[1:] for ln in out.decode("latin-1").splitlines()
                   if ln.lstrip(".").startswith("!")]
    if "KVM internal error" in err_text:
        raise QemuError(f"QEMU with -accel kvm failed: {_kvm_failure(err_text)}")
    if guest_lines:
        raise QemuError(f"the QEMU Guest failed: {guest_lines[0].strip()}")
    if why:
        raise QemuError(why)
    if status != 1:
        msgs = [ln.strip() for ln in err_text.splitlines()
                if ln.strip() and "warning:" not in ln]
        if msgs:
            raise QemuError(f"QEMU with -accel kvm failed: {_one_line(msgs[-1])}")
        if status == 0:
            raise QemuError("QEMU with -accel kvm failed: the Guest reset (a triple fault?)")
        raise QemuError(f"QEMU with -accel kvm failed: exit status {status}")
    return marks


@functools.lru_cache(maxsize=None)
def _probe(qemu):
    try:
        marks = run_qemu("mode=0", BOOT_TIMEOUT, qemu)
    except QemuError as e:
        return str(e)
    return None if marks else "QEMU with -accel kvm failed: the Guest never reported"


def qemu_unavailable_reason() -> str | None:
    """None when QEMU can boot a Guest with KVM here, else why not, in one line."""
    qemu = find_qemu()
    if qemu is None:
        return "qemu-system-i386 not installed"
    return _probe(qemu)


def qemu_bench(name, quick) -> list[float]:
    """Seconds per op of benchmark `name` (QEMU_BENCHES), per lap, the first lap dropped when
    there are more than two; raises QemuError with a one-line reason when it cannot run."""
    if name not in QEMU_BENCHES:
        raise KeyError(name)
    reason = qemu_unavailable_reason()
    if reason:
        raise QemuError(reason)
    mode, n_full, n_quick, laps_full, laps_quick = _PLAN[name]
    n, laps = (n_quick, laps_quick) if quick else (n_full, laps_full)
    mb = MEMBURN_MB[quick]
    marks = run_qemu(f"mode={mode} n={n} laps={laps} mb={mb}", BOOT_TIMEOUT + (60 if quick else 240))
    if len(marks) != laps + 1:
        raise QemuError(f"the QEMU Guest marked {len(marks)} laps, not {laps + 1}")
    per_op = 1 if name == "qemu-memburn" else n
    samples = [(b - a) / per_op for a, b in zip(marks, marks[1:])]
    if len(samples) > 2:
        samples = samples[1:]
    if not all(s > 0 for s in samples):
        raise QemuError("laps too short to time (two markers arrived together)")
    return samples
