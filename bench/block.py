#!/usr/bin/env python3
"""Block: a 64 MiB disk read sequentially by a Guest through the real Launcher, and what the
Launcher itself costs per request beside a plain os.preadv of the same bytes.

    python bench/block.py [--mib N] [--runs R] [--json FILE]      # from the repository root

A benchmark, not a test: it prints what it measured and never judges it.
"""
# M:700 What does a disk read cost?  The bundled Guest OS reads its disk 512 bytes at a time, which
# measures the exit, not the disk; so this benchmark runs lguest-bench's block Guest
# (lguest_bench/guests/blkbench.c, M:970) in read mode, for one lap over the whole disk, in the
# largest requests 2.6.23's block device allows: 16 sections of one page each, 64 KiB per request
# (lguest-abi §8.6: at most 16 segments, none crossing a page).  It checks the first and last word
# of every page against the pattern the file was filled with, so a fast wrong answer cannot pass
# for a fast right one.
#
# The runs are `python -m launcher --block=FILE 64 blkbench.elf r N 1` as real processes:
#
#   1. end to end, unmodified: the time between the Guest's two "mark" console lines (before and
#      after its lap), as this script sees them arrive on the Launcher's stdout;
#   2. instrumented, three times (this script re-run as the Launcher, `--child`,
#      launcher.main.main() with lguest_kvm.open wrapped): for every block request, the time from
#      read() returning it to the start of the LHREQ_IRQ write that completes it, and inside that
#      the Launcher's own preadv and its GETDMA.  Beside it, in the same process and after the
#      Guest is gone, os.preadv of the same 64 KiB at the same offsets, from a descriptor opened
#      the way launcher/block.py opens one (O_DIRECT where the filesystem allows it), into the
#      same iovecs over a lguest_kvm.guest_memory() buffer of the same size: back to back, and
#      paced like the Guest;
#   3. instrumented once more, with one extra os.preadv of the same bytes into the same Guest
#      memoryviews right after each of the Launcher's own (its time kept out of the Launcher's
#      figures): the host's read while the VM is alive, which on kvm-pvm is slower than the same
#      read into memory no VM maps.
# :*
import argparse
import json
import os
import pathlib
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lguest_bench import devices            # noqa: E402
from launcher.devices import DMA_SIZE       # noqa: E402

MIB = 1 << 20
PAGE = 4096
REQ_BYTES = 16 * PAGE
TIMEOUT = 600

def guest_image():
    return devices.block_image()


def make_disk(path, size):
    """The disk file: page i starts with i ^ RMAGIC, the rest of it 0xa5 (lguest-bench's
    block-read disk, lguest_bench/devices.py)."""
    devices.make_disk(path, size // PAGE)


def guest_args(disk):
    """blkbench.c's command line: read, one request per 64 KiB of the disk, one lap."""
    return ["r", str(os.path.getsize(disk) // REQ_BYTES), "1"]


# --- running the Launcher -------------------------------------------------------------------------

def run_launcher(cmd):
    """Run a Launcher; return the time between the Guest's two "mark" lines (time.monotonic() in
    this process, as they arrive), its "bb: done" counts and the Launcher's stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marks, stats = [], None
    try:
        for raw in p.stdout:                   # one console DMA per printk line
            now = time.monotonic()
            line = raw.decode("latin-1").strip()
            if line == "mark":
                marks.append(now)
            elif line.startswith("bb: done"):
                stats = devices.parse(line[4:])
                stats.pop("event", None)
            if time.monotonic() - t0 > TIMEOUT:
                raise RuntimeError("the Launcher took too long")
        rc = p.wait(TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read().decode(errors="replace")
    if rc != 0 or len(marks) != 2 or stats is None:
        raise RuntimeError(f"Launcher exit {rc}, {len(marks)} marks, counts {stats}, "
                           f"stderr {err!r}")
    return {"seconds": marks[1] - marks[0], "wall": time.monotonic() - t0, "stats": stats,
            "stderr": err}


def launcher_cmd(disk, image):
    return [sys.executable, "-m", "launcher", f"--block={disk}", "64", str(image), *guest_args(disk)]


# --- the instrumented Launcher (this script with --child) ------------------------------------------

class TimedHost:
    """lguest_kvm's Host object, with read() and the LHREQ_IRQ write timed for block requests.

    The probe's own work is kept out of the figures as far as it can be: in read() it runs before
    the clock is read, in write() after.  The first GETDMA's answer, the reply buffer of the first
    request, is kept (its struct lguest_dma) for the baseline to read into the same iovecs."""

    def __init__(self, lg, probe):
        self._lg, self._probe = lg, probe
        self._irq_word = struct.pack("<I", probe["LHREQ_IRQ"])
        self._getdma_word = struct.pack("<I", probe["LHREQ_GETDMA"])

    def __getattr__(self, name):
        return getattr(self._lg, name)

    def read(self, n):
        r = self._lg.read(n)
        p = self._probe
        mine = len(r) == 8 and p["key"] is not None and struct.unpack("<II", r)[1] == p["key"]
        p["pending"] = t = time.perf_counter_ns() if mine else None
        if mine and p["irq_at"] is not None:   # how long the Guest took to send the next one
            p["gap"].append(t - p["irq_at"])
        p["irq_at"] = None
        return r

    def write(self, buf):
        t = time.perf_counter_ns()
        p = self._probe
        if p["pending"] is None:
            return self._lg.write(buf)
        word = bytes(buf[:4])
        if word == self._irq_word:
            p["total"].append(t - p["pending"])
            p["pending"] = None
            r = self._lg.write(buf)
            p["irq_at"] = time.perf_counter_ns()
            return r
        r = self._lg.write(buf)
        if word == self._getdma_word and p["dma"] is None:
            p["dma"] = (r, bytes(memoryview(self._lg.memory)[r:r + DMA_SIZE]))
            p["pending"] += time.perf_counter_ns() - t
        return r


def child(argv):
    """One instrumented Launcher run.  mode "split" times every request and, inside it, the preadv
    and GETDMA (their wrappers cost a little, charged to "rest"); "again" does that plus one more
    preadv of the same bytes after each of the Launcher's; "total" times only whole requests."""
    disk, image, out, mode = argv
    split, again = mode in ("split", "again"), mode == "again"
    import lguest_kvm
    from lguest_kvm import abi
    from launcher import block, devices as ldevices, main as lmain

    probe = {"key": None, "pending": None, "total": [], "preadv": [], "getdma": [],
             "again": [], "dma": None, "direct": None, "irq_at": None, "gap": [],
             "LHREQ_IRQ": abi.LHREQ_IRQ, "LHREQ_GETDMA": abi.LHREQ_GETDMA}
    real_open, real_init = lguest_kvm.open, block.Block.__init__
    real_all, real_getdma = block.Block._all, lmain.Launcher.getdma

    def open_(*a, **kw):
        return TimedHost(real_open(*a, **kw), probe)

    def init(self, devices, path, launcher):
        real_init(self, devices, path, launcher)
        probe["key"], probe["direct"] = self.page, self.direct_fd >= 0

    def all_(op, fd, iov, off, want):
        t = time.perf_counter_ns()
        n = real_all(op, fd, iov, off, want)
        t1 = time.perf_counter_ns()
        probe["preadv"].append(t1 - t)
        if again:                               # the same read once more, into the live Guest
            os.preadv(fd, iov, off)
            t2 = time.perf_counter_ns()
            probe["again"].append(t2 - t1)
            if probe["pending"] is not None:    # not the Launcher's cost: keep it out
                probe["pending"] += t2 - t1
        return n

    def getdma(self, key):
        t = time.perf_counter_ns()
        r = real_getdma(self, key)
        if probe["pending"] is not None:
            probe["getdma"].append(time.perf_counter_ns() - t)
        return r

    lguest_kvm.open, block.Block.__init__ = open_, init
    if split:
        block.Block._all, lmain.Launcher.getdma = staticmethod(all_), getdma
    rc = lmain.main([f"--block={disk}", "64", image, *guest_args(disk)])
    sys.stdout.flush()
    if rc != 0:
        return rc

    # The baseline: the same offsets, the same iovecs (the first request's struct lguest_dma, put
    # through the Launcher's own dma_buffers() at the same address of a memory of the same size and
    # kind), the same kind of descriptor.  Two passes back to back; then one pass paced like the
    # Guest, each read after a busy wait as long as the Guest's median time between requests.
    mem = lguest_kvm.guest_memory(64 * MIB + 3 * PAGE)
    dl = ldevices.DeviceList(mem, 64 * MIB)
    dma, raw = probe["dma"]
    dl.mv[dma:dma + len(raw)] = raw
    iov, want, _ = dl.dma_buffers(dma)
    niov = len(iov)
    if probe["direct"]:
        fd = os.open(disk, os.O_RDONLY | os.O_CLOEXEC | block.O_DIRECT)
    else:
        fd = os.open(disk, os.O_RDONLY | os.O_CLOEXEC)
    size = os.fstat(fd).st_size
    gap = int(statistics.median(probe["gap"]))
    base, paced = [], []
    try:
        for out_, wait in ((base, 0), (base, 0), (paced, gap)):
            for off in range(0, size - want + 1, want):
                if wait:
                    end = time.perf_counter_ns() + wait
                    while time.perf_counter_ns() < end:
                        pass
                t = time.perf_counter_ns()
                n = os.preadv(fd, iov, off)
                out_.append(time.perf_counter_ns() - t)
                assert n == want, n
    finally:
        os.close(fd)
        del iov
        dl.close()
    pathlib.Path(out).write_text(json.dumps({
        "total": probe["total"], "preadv": probe["preadv"], "getdma": probe["getdma"],
        "again": probe["again"], "gap": probe["gap"], "paced": paced, "iovecs": niov,
        "baseline": base, "direct": probe["direct"], "req_bytes": want}))
    return 0


# --- report ---------------------------------------------------------------------------------------

def med_us(xs):
    return statistics.median(xs) / 1000


def mean_us(xs):
    return statistics.fmean(xs) / 1000


def _rest(c):
    return [t - p - g for t, p, g in zip(c["total"], c["preadv"], c["getdma"])]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="disk size in MiB (64)")
    ap.add_argument("--runs", type=int, default=3, help="end-to-end runs (3)")
    ap.add_argument("--timed", type=int, default=3,
                    help="instrumented runs for the Launcher/preadv ratio, each with its own "
                         "baseline (3)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child)

    from lguest_kvm import kvm_kind
    kind = kvm_kind()
    print(f"KVM: {kind}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
    image = guest_image()
    size = a.mib * MIB
    with tempfile.TemporaryDirectory(prefix="lgbench-", dir=os.environ.get("TMPDIR")) as tmp:
        disk = pathlib.Path(tmp) / "disk.img"
        make_disk(disk, size)
        nreq = -(-size // REQ_BYTES)
        print(f"disk: {a.mib} MiB ({disk.parent}), {nreq} read requests of up to "
              f"{REQ_BYTES // 1024} KiB (16 x 4 KiB sections)")

        e2e = []
        for _ in range(a.runs):
            r = run_launcher(launcher_cmd(disk, image))
            if r["stats"] != {"requests": nreq, "failed": 0, "bad": 0}:
                raise RuntimeError(f"the Guest says {r['stats']}")
            e2e.append(r)
        child_runs = {}
        for i, mode in enumerate(["split"] * a.timed + ["again"]):
            out = pathlib.Path(tmp) / f"child-{i}.json"
            cr = run_launcher([sys.executable, str(pathlib.Path(__file__).resolve()), "--child",
                               str(disk), str(image), str(out), mode])
            if cr["stats"] != {"requests": nreq, "failed": 0, "bad": 0}:
                raise RuntimeError(f"the Guest says {cr['stats']}")
            child_runs.setdefault(mode, []).append((cr, json.loads(out.read_text())))
        timed = child_runs["split"]
        again = child_runs["again"][0][1]["again"]

    secs = sorted(x["seconds"] for x in e2e)
    best, med = secs[0], statistics.median(secs)
    print()
    print("end to end: `python -m launcher --block=FILE 64 blkbench.elf r N 1`, Guest 'mark' to 'mark'")
    print(f"  runs (s)            {' '.join('%.3f' % s for s in secs)}")
    print(f"  median              {size / MIB / med:8.1f} MiB/s   {med / nreq * 1e6:8.1f} us/request")
    print(f"  best                {size / MIB / best:8.1f} MiB/s   {best / nreq * 1e6:8.1f} us/request")
    r = timed[0][0]
    print(f"  instrumented run    {size / MIB / r['seconds']:8.1f} MiB/s   "
          f"{r['seconds'] / nreq * 1e6:8.1f} us/request")
    print()
    c = timed[0][1]
    how = "O_DIRECT" if c["direct"] else "buffered"
    print(f"per 64 KiB request ({how}; {len(c['total'])} requests; {c['iovecs']} iovec(s) per "
          f"preadv; each baseline {len(c['baseline'])} + {len(c['paced'])} preadv calls)")
    print("                                             median us   mean us")
    rows = []
    for i, (_, c) in enumerate(timed, 1):
        rows += [(f"run {i}: Launcher, read() returns -> LHREQ_IRQ", c["total"]),
                 ("  of which its preadv (block._all)", c["preadv"]),
                 ("  of which GETDMA (Launcher.getdma)", c["getdma"]),
                 ("  rest (Python: parse, check, iov, result)", _rest(c)),
                 ("  host os.preadv, same bytes, same iovecs", c["baseline"]),
                 ("  the same, paced like the Guest", c["paced"]),
                 ("  (the Guest's time between requests)", c["gap"])]
    rows.append((f"run {len(timed) + 1}: host os.preadv again, live Guest mem", again))
    for name, xs in rows:
        print(f"  {name:<46} {med_us(xs):7.1f} {mean_us(xs):9.1f}")
    ratios = {
        "host preadv": [med_us(c["total"]) / med_us(c["baseline"]) for _, c in timed],
        "host preadv paced like the Guest": [med_us(c["total"]) / med_us(c["paced"])
                                             for _, c in timed],
        "its own preadv": [med_us(c["total"]) / med_us(c["preadv"]) for _, c in timed]}
    print("  Launcher / ...                             per run          median")
    for name, xs in ratios.items():
        print(f"    {name:<38} {' '.join('%.2fx' % x for x in xs):<16} "
              f"{statistics.median(xs):.2f}x")
    print("  target <= 1.2x")
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps({
            "benchmark": "block", "kvm_kind": kind, "mib": a.mib, "requests": nreq,
            "e2e_seconds": secs, "instrumented_seconds": r["seconds"], "direct": c["direct"],
            "iovecs": c["iovecs"], "median_us": {n.strip(): med_us(x) for n, x in rows},
            "mean_us": {n.strip(): mean_us(x) for n, x in rows},
            "ratios": ratios, "ratio_medians": {k: statistics.median(v) for k, v in ratios.items()}},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
