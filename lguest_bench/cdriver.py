"""The C driver: the same Guest under the same Switcher, its mechanism driven by C instead of Python.

bench/hypercall.py and lguest-bench take a snapshot of the Python Host's VM at the start of a
benchmark's laps and let lguest_bench/hcall_driver.c run the rest of it, doing the least a Host
can for that Guest; the difference is what Python costs.
"""
import errno
import hashlib
import os
import pathlib
import subprocess
import tempfile

from lguest_kvm import core
from lguest_kvm.kvm import kvm_regs, kvm_sregs
from launcher.guest.build import cache_dir, compiler_version

HERE = pathlib.Path(__file__).resolve().parent
DRIVER_SRC = HERE / "hcall_driver.c"
DRIVER_CFLAGS = ("-O2", "-Wall")


# M:520 Where to copy the VM.  The Host did real work before the loop — LGUEST_INIT wrote
# lguest_data and threw away the shadow page tables, and page faults filled them again — so the C
# driver must not start from the beginning; it starts where the Python Host's loop starts.  But
# "after the S marker" is not yet a state the vCPU can run from: on kvm-pvm the `int $0x1F` arrived
# as an emulation failure, the Host advanced EIP in the register frame, and it only hands the
# registers back to KVM (KVM_SET_REGS, assist.resume) at the top of the *next* entry; on hardware KVM
# it writes the frame's trap number and maybe a cr3 request first.  Rather than copy that logic, we
# let the Host do it: for one read() we slip our own function in where core.py calls KVM_RUN.  It
# takes the snapshot — exactly the state KVM_RUN would have been given — and answers EINTR, the
# answer a signal gives, which the run loop is built to take and resume from.  The Python loop is
# then timed on this same VM, so both measurements start from identical state.
# :*
def snapshot_at_next_entry(lg, dev, outdir):
    """Run the Guest `lg` (its device `dev`) up to its next KVM_RUN and dump the VM there."""
    real = core.kvm_run_raw

    taken = []

    def snapshot(vcpu_fd):
        taken.append(vcpu_fd)
        out = pathlib.Path(outdir)
        (out / "ram.bin").write_bytes(lg.mem[:lg.backed_pages * 4096])
        (out / "host.bin").write_bytes(lg.hmem[:])
        # With KVM_CAP_SYNC_REGS the registers KVM_RUN will load may still sit in kvm_run.
        run = lg.vm.run
        if lg.vm.sync_regs and run.kvm_dirty_regs & 1:
            regs = bytes(run.s.regs.regs)
        else:
            regs = bytes(lg.vm.get_regs(kvm_regs()))
        (out / "regs.bin").write_bytes(regs)
        (out / "sregs.bin").write_bytes(bytes(lg.vm.get_sregs(kvm_sregs())))
        return -errno.EINTR

    core.kvm_run_raw = snapshot
    try:
        dev.read(8)
    except OSError as e:
        if e.errno != errno.EINTR:
            raise
    finally:
        core.kvm_run_raw = real
    if taken != [lg.vm.vcpu]:
        raise RuntimeError("the Host did not stop at its next KVM_RUN")


# M:540 The C driver is compiled on demand, like the Guests: the system gcc, a cache directory
# keyed by a hash of the source, the flags and the compiler, and an atomic rename into place.
# :*
def build_driver():
    h = hashlib.sha256(DRIVER_SRC.read_bytes())
    h.update(" ".join(DRIVER_CFLAGS).encode() + b"\0" + compiler_version().encode())
    exe = cache_dir() / "bench" / ("hcall_driver-" + h.hexdigest()[:16])
    if exe.is_file():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", dir=exe.parent)
    os.close(fd)
    try:
        r = subprocess.run(["gcc", *DRIVER_CFLAGS, "-o", tmp, str(DRIVER_SRC)],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("compiling %s failed:\n%s" % (DRIVER_SRC, r.stderr))
        os.replace(tmp, exe)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return exe


def run_driver(exe, *args):
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("%s %s failed:\n%s" % (exe.name, " ".join(map(str, args)), r.stderr))
    head, has_crash, crash = r.stdout.strip().partition(" crash=")   # the message may hold spaces
    fields = dict(kv.split("=", 1) for kv in head.split())
    if has_crash:
        fields["crash"] = crash
    fields["laps_ns"] = [int(x) for x in fields["laps_ns"].split(",")]
    return fields
