"""Boot the test machine, run pytest inside it against its /dev/kvm, and power it off.

The machine sees the host's whole file system read-only (9p tag "hostroot"), so the checkout, the
Python running this and its pytest are all there, at the same paths.  Two directories are shared
read-write at their host paths too: a fresh work directory (the job script, pytest's cache, HOME,
the exit status) and the Guest build cache (LGUEST_KVM_CACHE), so Guests the host has built are not
built again under emulation.  The console (the kernel's, hw/init's and pytest's output) is copied to
our stdout as it arrives, and to work/console.log.
"""
import importlib.util
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

from . import prepare as prep

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIRMWARE = ("/usr/share/qemu", "/usr/share/seabios")      # qemu-system-data and seabios


def guest_cache_dir():
    """The Guest build cache the tests use (launcher/guest/build.py cache_dir())."""
    env = os.environ.get("LGUEST_KVM_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "lguest-kvm"


def needs_host_tmp(*paths):
    """Whether any of these lies in the host's /tmp, which the machine then must not hide under a
    tmpfs of its own."""
    return any(pathlib.Path(p).resolve().is_relative_to("/tmp") for p in paths)


def write_job(work, guests, pytest_args, test_timeout, tmpdir, pagings=("shadow",), script=None):
    """The script hw/init runs inside the machine, chrooted into the host's /."""
    env = {
        "HOME": work / "home",
        "TMPDIR": tmpdir,
        "PYTHONDONTWRITEBYTECODE": "1",                   # the checkout is read-only in there
        "HYPOTHESIS_STORAGE_DIRECTORY": work / "hypothesis",
        "LGUEST_KVM_CACHE": guests,
        "LGUEST_REQUIRE_KVM": "1",
        "LGUEST_REQUIRE_HW": "1",
        "LGUEST_DMA_MESSAGES": "2000",    # test_dma_streams: 100000 is sized for kvm-pvm, not emulation
    }
    # A hung test fails after test_timeout seconds (pytest-timeout, when installed, as in tox -e hw)
    # and the others still run; before that, faulthandler shows where it hangs.
    flags = ["--color=no", "-o", f"cache_dir={work / 'pytest-cache'}",
             "-o", f"faulthandler_timeout={test_timeout * 2 // 3}"]
    if importlib.util.find_spec("pytest_timeout"):
        flags += [f"--timeout={test_timeout}"]
    lines = ["set -u", f"cd {shlex.quote(str(ROOT))}",
             f"mkdir -p {shlex.quote(str(work / 'home'))} {shlex.quote(tmpdir)}"]
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in env.items()]
    lines += ['echo "HW: kvm module: $(ls -d /sys/module/kvm_amd /sys/module/kvm_intel '
              '/sys/module/kvm_pvm 2>/dev/null)"', "RC=0"]
    if script:                        # `python -m hw bench SCRIPT ARGS`: run that instead of pytest
        lines += [" ".join(shlex.quote(c) for c in (sys.executable, *script)), "exit $?"]
        pagings = ()
    # One pytest run per paging backend (LGUEST_KVM_PAGING sets the Host's default); the job fails
    # if any of them does.
    for paging in pagings:
        cmd = [sys.executable, "-m", "pytest", *flags, *pytest_args]
        lines += [f'echo "HW: pytest with LGUEST_KVM_PAGING={paging}"',
                  'S=$(cut -d" " -f1 /proc/uptime)',
                  f"LGUEST_KVM_PAGING={paging} " + " ".join(shlex.quote(c) for c in cmd),
                  "R=$?; [ $RC = 0 ] && RC=$R",
                  'echo "HW: pytest (' + paging + ') exited with $R after $(echo "$(cut -d" " -f1 '
                  "/proc/uptime) $S\" | awk '{printf \"%.1f\", $1 - $2}') s inside\""]
    lines += ["exit $RC"]
    (work / "job.sh").write_text("\n".join(lines) + "\n")


def qemu_command(qemu, kernel, initrd, work, guests, memory_mb, cpus, shell, host_tmp):
    def share(tag, path, readonly=False):
        ro = ",readonly=on" if readonly else ""
        return ["-fsdev", f"local,id={tag},path={path},security_model=none,multidevs=remap{ro}",
                "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]
    append = f"console=ttyS0 quiet loglevel=4 panic=-1 hw.work={work} hw.guests={guests}"
    if shell:
        append += " hw.shell"
    if host_tmp:
        append += " hw.host_tmp"
    firmware = [arg for d in FIRMWARE for arg in ("-L", d)]
    return [str(qemu), *firmware,
            "-accel", "tcg,thread=multi", "-machine", "q35", "-cpu", "max",
            "-m", str(memory_mb), "-smp", str(cpus),
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
            "-display", "none", "-no-reboot", "-nodefaults", "-monitor", "none",
            "-serial", "stdio" if shell else "chardev:console",
            *([] if shell else ["-chardev", "stdio,id=console,signal=off"]),
            *share("hostroot", "/", readonly=True), *share("work", work), *share("guests", guests)]


def check_path(p):
    if not p.is_absolute() or any(c.isspace() for c in str(p)):
        sys.exit(f"hw run: {p} must be an absolute path without spaces (it goes on a kernel command "
                 "line)")


def stream(proc, log, deadline):
    """Copy the console to stdout and the log until QEMU exits or the deadline passes; True if
    QEMU exited by itself."""
    os.set_blocking(proc.stdout.fileno(), False)
    while True:
        chunk = proc.stdout.read()
        if chunk:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            log.write(chunk)
        elif proc.poll() is not None:
            return True
        elif time.monotonic() > deadline:
            return False
        else:
            time.sleep(0.05)


def run(pytest_args, timeout=1500, test_timeout=240, memory_mb=1024, cpus=1, shell=False,
        pagings=("shadow",), script=None):
    """Boot the prepared machine and run pytest with pytest_args inside; pytest's exit status, or
    1 when the machine did not report one (it hung, crashed or failed to boot)."""
    qemu, kernel, initrd = prep.prepare()
    qemu = os.environ.get("LGUEST_HW_QEMU") or qemu       # another QEMU, to compare
    work = prep.cache_dir() / "run"
    guests = guest_cache_dir()
    for p in (work, guests):
        check_path(p.resolve())
    work, guests = work.resolve(), guests.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    guests.mkdir(parents=True, exist_ok=True)
    host_tmp = needs_host_tmp(ROOT, sys.executable, sys.prefix, work, guests)
    write_job(work, guests, pytest_args, test_timeout, "/dev/shm/tmp" if host_tmp else "/tmp",
              pagings, script)
    cmd = qemu_command(qemu, kernel, initrd, work, guests, memory_mb, cpus, shell, host_tmp)
    print("hw run: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.monotonic()
    if shell:
        return subprocess.run(cmd).returncode
    with open(work / "console.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            exited = stream(proc, log, t0 + timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    elapsed = time.monotonic() - t0
    rc_file = work / "rc"
    if not exited:
        print(f"hw run: FAILED: the machine was still running after {timeout} s; killed it")
        return 1
    if not rc_file.is_file():
        print(f"hw run: FAILED: QEMU exited with status {proc.returncode} and the job reported no "
              f"exit status (see {work / 'console.log'})")
        return 1
    rc = int(rc_file.read_text())
    what = "the script" if script else "pytest"
    print(f"hw run: the machine ran for {elapsed:.1f} s; {what} inside exited with status {rc}")
    return rc
