#!/usr/bin/env python3
"""DMA: Guest to Launcher throughput, Guest to Guest latency and throughput, beside the raw KVM exit.

    python bench/dma.py [--launcher-dmas N] [--trips N] [--g2g-dmas N] [--messages N] [--json FILE]

A benchmark, not a test: it prints what it measured and never judges it.
"""
# M:600 What does a DMA cost?  2.6.23's I/O is SEND_DMA: the Guest describes up to 16 sections of
# its memory and names a key.  A private key stops the Guest and hands the list to its Launcher; a
# shared key makes the Host copy the sections straight into another Guest's bound buffers and
# interrupt it.  We time four things, all with the Guests of tests/guests/dma_stream.c, in one run:
#
#   1. Guest to Launcher: 16 sections of 4 KiB per SEND_DMA to a private key.  The Launcher (this
#      process) checks the list, copies every section through memoryviews into a buffer of its own
#      and writes used_len, as a block or network device would.
#   2. Guest to Guest round trips between two Launcher processes (tests/dmapeer.py): a 16-byte
#      message one way and back, each side asleep in HALT until the other's DMA wakes it.
#   3. Guest to Guest throughput: 16 sections of 4 KiB per SEND_DMA (a section may not cross a page,
#      so this is the most one send can carry), to a receiver with 8 such buffers.
#   4. The same stream with 16-byte messages: how many sends a second.
#
# Beside them, in the same run, the floor: KVM_RUN round trips of a raw `out` loop driven from C
# (lguest_bench/hcall_driver.c's "out" mode).  Every figure is also given
# as a multiple of that exit.
# :*
import argparse
import ctypes
import errno
import json
import os
import pathlib
import platform
import statistics
import struct
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (ROOT, ROOT / "tests", HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from lguest_kvm import abi                                 # noqa: E402
from lguest_kvm.kvm import kvm_kind                        # noqa: E402
import guestrun                                            # noqa: E402
import dmapeer                                             # noqa: E402
from hypercall import cpu_model                              # noqa: E402
from lguest_bench.cdriver import build_driver, run_driver     # noqa: E402
from lguest_bench.devices import Peers                     # noqa: E402

DMAPEER = ROOT / "tests" / "dmapeer.py"
PAGES16 = ("SECTIONS=16", "SECLEN=4096")
LAUNCHER_KEY = 0x3000
TIMEOUT = 300
DMA = struct.Struct("<I16I16H")             # struct lguest_dma: used_len, addr[16], len[16]
USED_LEN = struct.Struct("<I")


# M:610 Guest to Launcher.  The Launcher's side of a DMA is what 2.6.23's example Launcher did for
# its devices: read {dma, key} from read(), look at the lguest_dma in Guest memory, refuse a section
# that is not inside the Guest (the Launcher's own check), take the bytes, write used_len, and read()
# again, which runs the Guest on.  The bytes go into one preallocated buffer with memoryview slice
# assignment: a copy per section and nothing else.  The clock runs from the Guest's "start" line to
# its report.
# :*
def guest_to_launcher(count, defines, label):
    assert DMA.size == ctypes.sizeof(abi.lguest_dma)
    image = dmapeer.build_image("launcher", defines)
    g = guestrun.Booted(image, cmdline=b"%d 1000" % count)
    mem, top = memoryview(g.mem), g.top
    sink = bytearray(16 * 4096)
    dmas = 0
    t_start = t_end = None
    report = None
    try:
        while True:
            try:
                r = g.lg.read(8)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                why = g.lg.read(1024).rstrip(b"\0").decode("latin-1")
                break
            dma, key = struct.unpack("<II", r)
            if key == LAUNCHER_KEY:
                f = DMA.unpack_from(mem, dma)
                total = 0
                for addr, length in zip(f[1:17], f[17:33]):
                    if length == 0:
                        break
                    if addr + length >= top:
                        raise RuntimeError("DMA section %u@%#x outside the Guest" % (length, addr))
                    sink[total:total + length] = mem[addr:addr + length]
                    total += length
                USED_LEN.pack_into(mem, dma, total)
                dmas += 1
                continue
            line = b"".join(g.dma_sections(dma)).decode("latin-1")
            g.set_used_len(dma, len(line))
            now = time.perf_counter()
            if line.startswith("start"):
                t_start = now
            elif line.startswith("send"):
                t_end, report = now, dmapeer.parse(line)
    finally:
        del mem
        g.close()
    if report is None or report["sent"] != count or dmas != count or why != "CRASH: Power down":
        raise RuntimeError("Guest to Launcher run went wrong: %r, %d DMAs, %r" % (report, dmas, why))
    if struct.unpack_from("<I", sink)[0] != count - 1:
        raise RuntimeError("the last DMA did not carry the last message")
    size = 16 * 4096 if defines else 16
    return result(label, t_end - t_start, count, size, "DMA")


# M:620 Guest to Guest.  Two Launcher processes, started as tests/test_dma_streams.py starts them:
# the receiving end first, and the sending end once the receiver has said "ready" (bound its
# buffers).  They share a page of a file (the key) and a directory of Guest ids (the registry):
# lguest_bench/devices.py's Peers, which lguest-bench's own Guest-to-Guest benchmarks use too.  The
# time is the Guest's own, as its Launcher saw it: from its "start" line to its report.
# :*
def run_peers(peers, first, second, n, ms, defines=()):
    """tests/dmapeer.py as both ends: `first` until it is ready, then `second`; events by role."""
    cmds = [[sys.executable, str(DMAPEER), role, str(peers.share), str(n), str(ms),
             "--image", str(dmapeer.build_image(role, defines))] for role in (first, second)]
    return dict(zip((first, second), peers.run(*cmds, timeout=TIMEOUT)))


def check_exit(events, role):
    why = events["exit"]["why"]
    if why != "CRASH: Power down":
        raise RuntimeError("the %s Guest died: %s" % (role, why))


def ping_pong(peers, trips):
    out = run_peers(peers, "pong", "ping", trips, 10000, ("NRX=4",))   # one message at a time
    for role in ("ping", "pong"):
        check_exit(out[role], role)
        done = out[role]["done"]
        if done["trips"] != trips or done["bad"] or done["gaveup"]:
            raise RuntimeError("%s: %r" % (role, done))
    ping = out["ping"]
    return result("Guest<->Guest round trip, 16 B each way", ping["done"]["t"] - ping["start"]["t"],
                  trips, 32, "round trip")


def stream(peers, n, defines, label):
    out = run_peers(peers, "recv", "send", n, 10000, defines)
    check_exit(out["send"], "send")
    check_exit(out["recv"], "recv")
    sent, got = out["send"]["send"], out["recv"]["recv"]
    if sent["sent"] != n or (got["count"], got["expect"], got["dups"], got["bad"]) != (n, n, 0, 0):
        raise RuntimeError("stream went wrong: %r / %r" % (sent, got))
    size = 16 * 4096 if defines else 16
    r = result(label, sent["t"] - out["send"]["start"]["t"], n, size, "DMA")
    r["sender_retries"], r["receiver_halts"] = sent["retries"], got["halts"]
    return r


def result(name, seconds, ops, size, unit):
    return {"mechanism": name, "seconds": seconds, "ops": ops, "bytes_per_op": size, "unit": unit,
            "us_per_op": seconds / ops * 1e6, "ops_per_s": ops / seconds,
            "mb_per_s": ops * size / seconds / 1e6}


# M:630 The floor, and the table.  The raw exit is bench/hypercall.py's: hcall_driver.c timing
# KVM_RUN round trips of `1: out %al,$0x10; jmp 1b` in a real-mode VM, the least any Host could pay
# for a Guest to reach it.  Each line says how many of those one operation costs.
# :*
def raw_exit_us(n, laps):
    laps_ns = run_driver(build_driver(), "out", n, laps)["laps_ns"]
    return statistics.median(laps_ns) / n / 1000


def print_table(rows, raw_us):
    width = max(len(r["mechanism"]) for r in rows)
    print("%-*s %12s %10s %10s %9s" % (width, "mechanism", "us/op", "ops/s", "MB/s", "/raw exit"))
    for r in rows:
        r["raw_exits_per_op"] = r["us_per_op"] / raw_us
        print("%-*s %12.1f %10.0f %10.1f %8.1fx" % (width, r["mechanism"], r["us_per_op"],
                                                    r["ops_per_s"], r["mb_per_s"],
                                                    r["raw_exits_per_op"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launcher-dmas", type=int, default=3000,
                    help="16x4KiB DMAs to the Launcher (3000)")
    ap.add_argument("--trips", type=int, default=2000, help="Guest-Guest round trips (2000)")
    ap.add_argument("--g2g-dmas", type=int, default=3000, help="16x4KiB Guest-Guest DMAs (3000)")
    ap.add_argument("--messages", type=int, default=20000, help="16-byte Guest-Guest sends (20000)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)

    kind = kvm_kind()
    print("KVM kind: %s" % kind)
    print("CPU: %s; %d CPUs; Python %s" % (cpu_model(), os.cpu_count(), platform.python_version()))
    raw_before = raw_exit_us(2000, 5)
    rows = [guest_to_launcher(args.launcher_dmas, PAGES16, "Guest->Launcher, 16 x 4 KiB per DMA"),
            guest_to_launcher(args.launcher_dmas, (), "Guest->Launcher, 16 B per DMA")]
    peers = Peers(prefix="lguest-dma-bench-")
    try:
        rows.append(ping_pong(peers, args.trips))
        rows.append(stream(peers, args.g2g_dmas, PAGES16,
                           "Guest->Guest stream, 16 x 4 KiB per DMA"))
        rows.append(stream(peers, args.messages, (), "Guest->Guest stream, 16 B per DMA"))
    finally:
        peers.close()
    raw_after = raw_exit_us(2000, 5)
    raw = statistics.median([raw_before, raw_after])
    print("raw C out loop (KVM_RUN round trip): %.1f us before, %.1f us after the DMA runs"
          % (raw_before, raw_after))
    print()
    print_table(rows, raw)
    g2l = rows[0]["mb_per_s"]
    print()
    print("Guest->Launcher 16x4KiB: %.0f MB/s (target 1000 MB/s: %s)"
          % (g2l, "met" if g2l >= 1000 else "%.0f%% of it" % (g2l / 10)))
    if args.json:
        res = {"benchmark": "dma", "kvm_kind": kind, "cpu": cpu_model(), "cpus": os.cpu_count(),
               "python": platform.python_version(), "raw_exit_us": raw,
               "raw_exit_us_runs": [raw_before, raw_after], "results": rows}
        pathlib.Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print("JSON written to %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
