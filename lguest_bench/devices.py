"""lguest-bench's device benchmarks: DMA between two Guests, and the Launcher's block device.

    DEVICE_BENCHES[name] = (what one op is, baseline key)
    device_bench(name, paging, quick) -> (seconds per op per lap, own baseline or None, extra)

    python -m lguest_bench.devices [--quick] [--paging=shadow|direct] [NAME...]   # print figures
    python -m lguest_bench.devices peer IMAGE SHARE_FILE [--paging=P] [--cmdline=TEXT]
"""
# M:962 The devices.  Everything so far ran one Guest against the Host; a device needs more
# company.  Guest-to-Guest DMA needs a second Guest in a second Launcher process; the block device
# needs the real Launcher (`python -m launcher --block=FILE`), a file and a disk.  Four benchmarks:
#
#   dma-pingpong    a 16-byte message to the other Guest and back: two SEND_DMAs, two wake-ups
#                   from HALT, in two processes; its baseline is a bare KVM exit;
#   dma-bandwidth   sends of 16 x 4 KiB sections (all one SEND_DMA can carry) to a receiver with
#                   8 such buffers; also MB/s; baseline a bare KVM exit;
#   block-read      64 KiB reads of the disk through the Launcher, checked by the Guest;
#   block-write     64 KiB writes, checked by reading the file back afterwards.  The block ones
#                   carry their own baseline: the host's own os.preadv / os.pwritev of the same
#                   requests on the same file, O_DIRECT when the Launcher's are.
#
# Each lap is timed between two markers of the Guest's (an empty DMA to a private key for the DMA
# Guests, a console line for the block Guest), and a run whose data was wrong gives no figures.
# :*
import argparse
import contextlib
import errno
import json
import os
import pathlib
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = 0x400000                   # Guest-physical address of the shared page
MARK_KEY = 0x2000                   # the timed Guest's private marker key
MB = 1 << 20
PAGE = 4096
REQ = 16 * PAGE                     # one block request, one bandwidth send
RMAGIC, WMAGIC = 0x6C67424B, 0x6C675752     # blkbench.c's: page i starts with i ^ magic
GOOD_DEATH = "CRASH: Power down"

DEVICE_BENCHES = {
    "dma-pingpong": ("a 16-byte message to another Guest and back (SEND_DMA each way)", "exit"),
    "dma-bandwidth": ("a SEND_DMA of 16 x 4 KiB to another Guest", "exit"),
    "block-read": ("a 64 KiB read through the Launcher's block device", "self"),
    "block-write": ("a 64 KiB write through the Launcher's block device", "self"),
}
# name: (ops per lap full, quick; laps full, quick)
PARAMS = {
    "dma-pingpong": (1500, 300, 7, 5),
    "dma-bandwidth": (3000, 500, 7, 5),
    "block-read": (1024, 128, 7, 5),
    "block-write": (1024, 128, 7, 5),
}
TIMEOUT = {False: 240, True: 60}


def laps_of(name, quick):
    """How many samples device_bench(name, ..., quick) returns."""
    laps = PARAMS[name][3 if quick else 2]
    return laps - 1 if laps > 2 else laps


def device_bench(name, paging, quick):
    """Run one device benchmark: (seconds per op for each lap, the benchmark's own baseline in
    seconds per op or None when its baseline key is "exit", extra figures)."""
    if name not in DEVICE_BENCHES:
        raise ValueError(f"unknown device benchmark {name!r}")
    n_full, n_quick, laps_full, laps_quick = PARAMS[name]
    n, laps = (n_quick, laps_quick) if quick else (n_full, laps_full)
    if name.startswith("dma-"):
        return dma_bench(name, paging, n, laps, TIMEOUT[quick])
    return block_bench(name == "block-write", paging, n, laps, TIMEOUT[quick])


def lap_samples(marks, n):
    samples = [(b - a) / n for a, b in zip(marks, marks[1:])]
    return samples[1:] if len(samples) > 2 else samples   # the first lap warms up


# M:966 Two Launchers.  Each end is this module run as a process (`peer`), as two `lguest
# --sharenet` commands would be: Guest memory from memfds, so that the other process's Host can
# copy into it, and page 0 of a shared file mapped MAP_SHARED at 0x400000, where the key lives.
# The Host finds the other Guest through the registry in $LGUEST_KVM_IDDIR, so each pair gets a
# private one, and a fresh shared page: a benchmark never meets Guests that are not its own.  The
# receiving end starts first, and the other once it has said "ready" (bound its buffers).
# :*
def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def parse(line):
    """'progress 4096' -> {event: progress, n: 4096}; 'done a=1 b=2' -> {event: done, a: 1, b: 2}."""
    words = line.split()
    if not words:
        return None
    out = {"event": words[0]}
    for w in words[1:]:
        if "=" in w:
            k, v = w.split("=", 1)
            out[k] = int(v) if v.isdigit() else v
        elif w.isdigit():
            out["n"] = int(w)
    return out


def peer(image, share, paging=None, cmdline=b"", mem_mb=4):
    """One end, run until its Guest dies.  On stdout, as JSON lines flushed at once: "boot", one
    event per line the Guest prints (parse(), with "t": seconds since boot), and last "exit" with
    the death message and "marks": the perf_counter() times of its DMAs to MARK_KEY."""
    import lguest_kvm
    from lguest_kvm import abi, memory
    from launcher import loader

    size = mem_mb * MB
    top = size + PAGE                           # RAM, then the shared page
    mem = memory.guest_memory(top + PAGE)
    fd = os.open(share, os.O_RDWR)
    try:
        memory.map_file_page(mem, SHARED, fd, 0)
        page_offset, start = loader.load_elf(mem, pathlib.Path(image).read_bytes())
        pgdir = loader.setup_pagetables(mem, size, 0, page_offset)
        loader.setup_boot_params(mem, size, cmdline)
        with lguest_kvm.open(mem, paging=paging) as lg:
            lg.write(struct.pack("<5I", abi.LHREQ_INITIALIZE, top // PAGE, pgdir, start,
                                 page_offset))
            t0 = time.monotonic()
            emit(event="boot", pid=os.getpid(), guestid=lg.guest.guestid, kind=lg.kind)
            marks, pending = [], b""
            while True:
                try:
                    dma, key = struct.unpack("<II", lg.read(8))
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
                    why = lg.read(1024).split(b"\0")[0].decode("latin-1")
                    break
                if key == MARK_KEY:
                    marks.append(time.perf_counter())
                    continue
                d = abi.lguest_dma.from_buffer_copy(mem, dma)
                data = b"".join(mem[a:a + n] for a, n in zip(d.addr, d.len) if n)
                struct.pack_into("<I", mem, dma + abi.lguest_dma.used_len.offset, len(data))
                if key != abi.LGUEST_CONSOLE_DMA_KEY:
                    emit(event="dma", key=key)
                    continue
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    ev = parse(line.decode("latin-1"))
                    if ev:
                        ev["t"] = round(time.monotonic() - t0, 4)
                        emit(**ev)
            emit(event="exit", why=why, marks=marks, elapsed=round(time.monotonic() - t0, 4))
    finally:
        os.close(fd)
        memory.release_guest_memory(mem)
        mem.close()


@contextlib.contextmanager
def killer(proc, timeout):
    """Kill proc if this takes longer than timeout seconds (a read of its output would hang)."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class Peers:
    """A private registry directory and a shared page, for pairs of Launcher processes."""

    def __init__(self, prefix="lguest-peers-"):
        self.tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.share = pathlib.Path(self.tmp.name) / "sharenet"
        self.share.write_bytes(bytes(PAGE))
        self.env = dict(os.environ, LGUEST_KVM_IDDIR=str(pathlib.Path(self.tmp.name) / "ids"))
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else []))

    def command(self, image, paging=None, cmdline=""):
        """One end: this module's `peer` on `image`."""
        return [sys.executable, "-m", "lguest_bench.devices", "peer", str(image), str(self.share),
                *([f"--paging={paging}"] if paging else []), f"--cmdline={cmdline}"]

    def run(self, first, second, timeout=300):
        """Start the command `first` and wait for its "ready" line, then `second`; wait for both
        to end.  Returns their event streams as two {event name: its last event} dicts."""
        procs = []
        try:
            for cmd in (first, second):
                p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=self.env)
                procs.append(p)
                if cmd is first:
                    with killer(p, timeout):
                        for line in p.stdout:
                            if json.loads(line)["event"] == "ready":
                                break
                        else:
                            raise RuntimeError("the first Guest never got ready: " + " ".join(cmd))
            deadline = time.monotonic() + timeout
            out = []
            for p in procs:
                rest, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
                out.append({ev["event"]: ev for ev in map(json.loads, rest.splitlines())})
            return out
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def close(self):
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# M:968 The DMA benchmarks.  dmabench.c is built once per role; the receiving end (PONG, RECV)
# starts first.  Both Guests must power off cleanly having done every operation with nothing bad
# and neither giving up; then the timed end's markers make the laps.
# :*
def dma_image(role):
    from launcher.guest.build import build_guest
    return build_guest([HERE / "guests" / "dmabench.c"], cflags=(f"-DROLE_{role.upper()}",),
                       name=f"dmabench-{role}")


def dma_bench(name, paging, n, laps, timeout):
    first, second = ("pong", "ping") if name == "dma-pingpong" else ("recv", "send")
    cmdline = f"{n} {laps} 15000"                # a Guest whose peer is silent that long gives up
    with Peers(prefix="lguest-bench-dma-") as peers:
        out = peers.run(peers.command(dma_image(first), paging, cmdline),
                        peers.command(dma_image(second), paging, cmdline), timeout)
    for role, events in zip((first, second), out):
        why = events.get("exit", {}).get("why")
        done = events.get("done")
        if why != GOOD_DEATH or not done:
            raise RuntimeError(f"{name}: the {role} Guest died: {why!r}")
        if (done["ops"], done["bad"], done["gaveup"]) != (n * laps, 0, 0):
            raise RuntimeError(f"{name}: the {role} Guest says {done}")
    marks = out[1]["exit"]["marks"]
    if len(marks) != laps + 1:
        raise RuntimeError(f"{name}: {len(marks)} markers for {laps} laps")
    samples = lap_samples(marks, n)
    extra = {"ops": n * laps, "verified": True, "sender_retries": out[1]["done"]["retries"]}
    if name == "dma-bandwidth":
        extra["bytes_per_op"] = REQ
        extra["mb_per_s"] = REQ / statistics.median(samples) / 1e6
    else:
        extra["bytes_per_op"] = 32
    return samples, None, extra


# M:972 The block benchmarks.  The disk is one lap long (N requests of 64 KiB), its page i
# starting with i ^ RMAGIC and the rest 0xa5, so the read Guest can check what it gets and the
# write benchmark can see that every page was written.  The real Launcher runs it, and the laps
# are the arrival times of the Guest's "mark" lines on the Launcher's stdout: the console DMA's
# writev().  Memory is 16 MB: the Guest needs little, and a smaller Guest boots sooner.
# :*
def block_image():
    from launcher.guest.build import build_guest
    return build_guest([HERE / "guests" / "blkbench.c"], name="blkbench")


def make_disk(path, pages):
    page = bytearray(b"\xa5" * PAGE)
    with open(path, "wb") as f:
        for i in range(pages):
            struct.pack_into("<I", page, 0, i ^ RMAGIC)
            f.write(page)
        f.flush()
        os.fsync(f.fileno())


def written_page(i):
    return struct.pack("<I", i ^ WMAGIC) + b"\x5a" * (PAGE - 8) + struct.pack("<I", ~i & 0xFFFFFFFF)


def check_written(path, pages):
    """How many pages of the file are not what blkbench.c writes."""
    wrong = 0
    with open(path, "rb") as f:
        for i in range(pages):
            wrong += f.read(PAGE) != written_page(i)
    return wrong


def run_block_launcher(disk, write, paging, n, laps, timeout):
    cmd = [sys.executable, "-m", "launcher", f"--paging={paging}", f"--block={disk}", "16",
           str(block_image()), "w" if write else "r", str(n), str(laps)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                       else []))
    marks, done = [], None
    errf = tempfile.TemporaryFile()            # a pipe nobody reads could fill up and stall it
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=errf)
    try:
        with killer(p, timeout):
            for raw in p.stdout:                # one console DMA per line the Guest prints
                now = time.perf_counter()
                line = raw.decode("latin-1").strip()
                if line == "mark":
                    marks.append(now)
                elif line.startswith("bb: done"):
                    done = parse(line[4:])
            rc = p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    p.stdout.close()
    errf.seek(0)
    err = errf.read().decode(errors="replace").strip()
    errf.close()
    if rc == -9:
        raise RuntimeError(f"the block Launcher took more than {timeout} s and was killed: {err}")
    if rc != 0 or done is None:
        raise RuntimeError(f"the block Launcher exited {rc}: {err}")
    if (done["requests"], done["failed"], done["bad"]) != (n * laps, 0, 0):
        raise RuntimeError(f"the block Guest says {done}")
    if len(marks) != laps + 1:
        raise RuntimeError(f"{len(marks)} markers for {laps} laps")
    return marks


# M:975 The block baseline: this process doing what the Launcher does for each request, without a
# Guest: one os.preadv or os.pwritev of 16 page-sized memoryviews of memfd-backed memory (what
# Guest memory is) at the same offsets of the same file, O_DIRECT when the filesystem allows it,
# as launcher/block.py opens the disk, in as many laps of as many requests.  The writes put back
# exactly what the Guest wrote, so the file is checked again after them.
# :*
def host_io(disk, write, n, laps):
    """The host's own requests: (median seconds per request over the laps, whether O_DIRECT)."""
    from lguest_kvm import memory
    from launcher.block import O_DIRECT

    mem = memory.guest_memory(REQ)
    mv = memoryview(mem)
    iov = [mv[i * PAGE:(i + 1) * PAGE] for i in range(16)]
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC
    fd, direct = -1, bool(O_DIRECT)
    try:
        try:
            fd = os.open(disk, flags | O_DIRECT) if direct else os.open(disk, flags)
            os.preadv(fd, iov, 0)               # does the filesystem take these requests?
        except OSError as e:
            if not direct or e.errno != errno.EINVAL:
                raise
            if fd >= 0:
                os.close(fd)
            direct, fd = False, os.open(disk, flags)
        op = os.pwritev if write else os.preadv
        per_op = []
        for _ in range(laps):
            spent = 0.0
            for r in range(n):
                if write:
                    for i in range(16):
                        mv[i * PAGE:(i + 1) * PAGE] = written_page(r * 16 + i)
                t = time.perf_counter()
                done = op(fd, iov, r * REQ)
                spent += time.perf_counter() - t
                if done != REQ:
                    raise RuntimeError(f"host {op.__name__}: {done} of {REQ} bytes")
            per_op.append(spent / n)
        if write:
            os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
        del iov
        mv.release()
        memory.release_guest_memory(mem)
        mem.close()
    return statistics.median(per_op[1:] if len(per_op) > 2 else per_op), direct


def block_bench(write, paging, n, laps, timeout):
    pages = n * 16
    with tempfile.TemporaryDirectory(prefix="lguest-bench-block-",
                                     dir=os.environ.get("TMPDIR")) as tmp:
        disk = pathlib.Path(tmp) / "disk.img"
        make_disk(disk, pages)
        marks = run_block_launcher(disk, write, paging, n, laps, timeout)
        if write and check_written(disk, pages):
            raise RuntimeError("the file does not hold what the block Guest wrote")
        base, direct = host_io(disk, write, n, laps)
        if write and check_written(disk, pages):
            raise RuntimeError("the host's own writes changed the file")
    samples = lap_samples(marks, n)
    med = statistics.median(samples)
    return samples, base, {"requests": n * laps, "bytes_per_op": REQ, "disk_bytes": pages * PAGE,
                           "direct": direct, "verified": True, "mb_per_s": REQ / med / 1e6,
                           "host_mb_per_s": REQ / base / 1e6}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lguest_bench.devices",
                                 description=__doc__.splitlines()[0])
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["peer"]:
        pp = argparse.ArgumentParser(prog="python -m lguest_bench.devices peer")
        pp.add_argument("image")
        pp.add_argument("share")
        pp.add_argument("--paging", choices=("shadow", "direct"))
        pp.add_argument("--cmdline", default="")
        a = pp.parse_args(argv[1:])
        peer(a.image, a.share, a.paging, a.cmdline.encode())
        return 0
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--paging", default="shadow", choices=("shadow", "direct"))
    ap.add_argument("names", nargs="*", metavar="NAME", help=", ".join(DEVICE_BENCHES))
    a = ap.parse_args(argv)
    for name in a.names or DEVICE_BENCHES:
        t = time.monotonic()
        samples, base, extra = device_bench(name, a.paging, a.quick)
        med = statistics.median(samples)
        line = f"{name:14} {a.paging:7} median {med * 1e6:9.1f} us/op  laps " + \
            " ".join(f"{s * 1e6:.1f}" for s in samples)
        if base:
            line += f"  own baseline {base * 1e6:.1f} us ({med / base:.2f}x)"
        extras = {k: round(v, 1) if isinstance(v, float) else v for k, v in extra.items()}
        print(f"{line}  {extras}  [{time.monotonic() - t:.1f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
