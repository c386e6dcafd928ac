#!/usr/bin/env python3
"""Hypercall round trip: the Python Host beside a C driver of the same Guest, and the raw KVM floor.

    python bench/hypercall.py [--n N] [--laps L] [--json FILE]

A benchmark, not a test: it prints what it measured and never judges it.
"""
# M:500 How much does it cost to be a Host written in Python?  The cheapest thing a Guest can ask
# of its Host is a hypercall that does nothing: LHCALL_FLUSH_ASYNC.  The Guest executes
# `int $0x1F`, the vCPU leaves KVM_RUN, the Host looks at what happened, does nothing, and sends the
# Guest on its way.  So we time a tight loop of them, three ways, in one run:
#
#   1. the Python Host, through the ordinary /dev/lguest read() loop;
#   2. a small C program driving *the very same Guest* under *the very same Switcher*: it gets a
#      copy of the Python Host's VM — both memory slots and the vCPU's registers — taken at the
#      instant the Python Host was about to KVM_RUN the loop, and does the least a Host could do;
#   3. the floor: a C program timing KVM_RUN round trips of a bare `out` loop.
#
# (1)/(2) is what Python costs; (2)/(3) is what the lguest exit path costs on this kind of KVM.
# :*
import argparse
import errno
import json
import mmap
import pathlib
import platform
import statistics
import struct
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import lguest_kvm                                    # noqa: E402
from lguest_kvm import abi, core, switcher           # noqa: E402
from lguest_kvm.kvm import (KVM, VM, KVM_CHECK_EXTENSION, KVM_EXIT_IO, ioctl, kvm_kind,  # noqa: E402
                            kvm_regs, kvm_run_raw)

KVM_CAP_SYNC_REGS = 74
from launcher import loader                          # noqa: E402
from launcher.guest.build import build_guest                 # noqa: E402
from lguest_bench.cdriver import build_driver, run_driver, snapshot_at_next_entry  # noqa: E402

MB = 1 << 20

# M:510 The Guest.  It reads N and the number of laps from its command line, says hello to the Host
# (LGUEST_INIT), and prints one byte, "S", on its console: a SEND_DMA to key 0, which makes the
# Launcher's read() return.  Then, each lap, N empty hypercalls and an "E".  Timing from one read()
# return to the next thus times exactly N round trips and one console DMA.  The markers go straight
# to console_write() rather than printk(), so the few hundred emulated instructions of printf
# formatting stay out of the measurement.
# :*
GUEST_SRC = r"""
#include "lguest.h"

static unsigned long number(const char **s)
{
	unsigned long n = 0;

	while (**s == ' ')
		(*s)++;
	while (**s >= '0' && **s <= '9')
		n = n * 10 + (*(*s)++ - '0');
	return n;
}

int main(void)
{
	const char *cmdline = boot_cmdline();
	unsigned long n = number(&cmdline), laps = number(&cmdline), lap, i;

	lguest_init();
	console_write("S", 1);
	for (lap = 0; lap < laps; lap++) {
		for (i = 0; i < n; i++)
			hcall(LHCALL_FLUSH_ASYNC, 0, 0, 0);
		console_write("E", 1);
	}
	return 0;	/* guest_start() then crashes with "Power down" */
}
"""


class BenchGuest:
    """The benchmark Guest laid out and initialized as tests/guestrun.py's Booted does."""

    def __init__(self, image, cmdline, mem_mb=4):
        self.mem_size = mem_mb * MB
        top = self.mem_size + 4096                       # one device page after RAM
        self.mem = mmap.mmap(-1, top + 4096)
        self.page_offset, start = loader.load_elf(self.mem, pathlib.Path(image).read_bytes())
        pgdir = loader.setup_pagetables(self.mem, self.mem_size, 0, self.page_offset)
        loader.setup_boot_params(self.mem, self.mem_size, cmdline)
        self.lg = lguest_kvm.open(self.mem)
        r = self.lg.write(struct.pack("<5I", abi.LHREQ_INITIALIZE, top // 4096, pgdir, start,
                                      self.page_offset))
        if r != 16:
            raise RuntimeError("LHREQ_INITIALIZE returned %r" % r)

    @property
    def guest(self):
        return self.lg.guest

    def marker(self):
        """read() until the next console DMA; the Launcher's reply (used_len) included."""
        dma, key = struct.unpack("<II", self.lg.read(8))
        if key != abi.LGUEST_CONSOLE_DMA_KEY:
            raise RuntimeError("DMA to key %#x, not the console" % key)
        d = abi.lguest_dma.from_buffer_copy(self.mem, dma)
        text = bytes(self.mem[d.addr[0]:d.addr[0] + d.len[0]])
        struct.pack_into("<I", self.mem, dma, len(text))
        return text

    def death(self):
        try:
            self.lg.read(8)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        return self.lg.read(1024).rstrip(b"\0").decode("latin-1")

    def close(self):
        self.lg.close()


# M:530 The Python Host's measurement: a read() per lap, timed on the Launcher's side.  Every
# mechanism runs one lap more than it reports and drops the first, which pays for cold caches (and,
# in the C driver's fresh VM, for KVM building its own mappings).  The exit counts the Host keeps for
# benchmarks say what happened in between: on kvm-pvm one assisted vector-31 exit per hypercall,
# N + 1 per lap.
# :*
def measure_python(g, laps):
    lg = g.guest
    g.marker()                                      # the warm-up lap
    exits0, assists0 = dict(lg.exits), lg.assists
    times = []
    t = time.perf_counter_ns()
    for _ in range(laps):
        text = g.marker()
        t1 = time.perf_counter_ns()
        if text != b"E":
            raise RuntimeError("unexpected console output %r" % text)
        times.append(t1 - t)
        t = t1
    exits = {k: v - exits0.get(k, 0) for k, v in lg.exits.items() if v != exits0.get(k, 0)}
    return times, exits, lg.assists - assists0


# M:535 Where a round trip's time goes: inside KVM_RUN (the exit and the entry, the Guest's own
# instructions, on kvm-pvm their emulation) or outside it (the Host's own work).  The C driver
# counts its time inside KVM_RUN itself; for the Python Host a fresh Guest runs two more laps
# with KVM_RUN wrapped in a timer (which adds two clock reads per exit to both).
# :*
def split_python(image, n):
    g = BenchGuest(image, b"%d %d" % (n, 2))
    raw, acc = core.kvm_run_raw, [0, 0]

    def timed(fd):
        t = time.perf_counter_ns()
        r = raw(fd)
        acc[0] += time.perf_counter_ns() - t
        acc[1] += 1
        return r
    try:
        if g.marker() != b"S":
            raise RuntimeError("the Guest did not reach its loop")
        g.marker()                                      # warm-up lap
        core.kvm_run_raw = timed
        t = time.perf_counter_ns()
        g.marker()
        total = time.perf_counter_ns() - t
    finally:
        core.kvm_run_raw = raw
        g.close()
    return total / n, acc[0] / n


def measure_c_guest(exe, dumpdir, g, n, laps, variant):
    out = run_driver(exe, "guest", dumpdir, n, laps + 1, g.page_offset, switcher.FRAME_OFFSET,
                     switcher.FRAME_SIZE, variant)
    return out["laps_ns"][1:], out                  # without the warm-up lap


# M:550 One more floor, for the curious: the raw `out` loop driven from Python through the same
# ctypes KVM_RUN the Host uses.  What it adds to the C floor is the price of crossing from Python
# into the kernel and back once per exit, with no Host logic at all.
# :*
def measure_python_out(n, laps):
    kvm = KVM()
    vm = VM(kvm)
    mem = mmap.mmap(-1, 0x10000)
    run = None
    try:
        mem[0x1000:0x1004] = bytes((0xE6, 0x10, 0xEB, 0xFC))        # 1: out %al,$0x10; jmp 1b
        vm.set_memory(0, 0, mem, 0x10000)
        sregs = vm.get_sregs()
        sregs.cs.base, sregs.cs.selector = 0, 0
        vm.set_sregs(sregs)
        regs = kvm_regs()
        regs.rip, regs.rflags = 0x1000, 2
        vm.set_regs(regs)
        run, vcpu = vm.run, vm.vcpu
        times = []
        for lap in range(laps + 1):                                    # lap 0 warms up
            t = time.perf_counter_ns()
            for _ in range(n):
                if kvm_run_raw(vcpu) or run.exit_reason != KVM_EXIT_IO or run.u.io.port != 0x10:
                    raise RuntimeError("raw loop: exit %d" % run.exit_reason)
            if lap:
                times.append(time.perf_counter_ns() - t)
        return times
    finally:
        run = None
        vm.close()
        kvm.close()
        try:
            mem.close()
        except BufferError:
            pass


# M:560 The table.  Every figure is per round trip: the median lap divided by N (the best lap is
# in the JSON too), and each is set against the two C baselines measured in the same run.
# :*
def summarise(name, key, laps_ns, n):
    per_op = [t / n for t in laps_ns]
    return {"mechanism": name, "key": key, "ns_per_op": statistics.median(per_op),
            "ns_per_op_min": min(per_op), "laps_ns": laps_ns}


def print_table(rows, c_key, raw_key):
    base = {r["key"]: r["ns_per_op"] for r in rows}
    width = max(len(r["mechanism"]) for r in rows)
    print("%-*s %10s %10s %8s %8s" % (width, "mechanism", "ns/op", "min ns/op", "/C drv", "/raw out"))
    for r in rows:
        r["ratio_c_driver"] = r["ns_per_op"] / base[c_key]
        r["ratio_raw_out"] = r["ns_per_op"] / base[raw_key]
        print("%-*s %10.0f %10.0f %7.2fx %7.2fx" % (width, r["mechanism"], r["ns_per_op"],
                                                     r["ns_per_op_min"], r["ratio_c_driver"],
                                                     r["ratio_raw_out"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="hypercalls per lap (default 2000)")
    ap.add_argument("--laps", type=int, default=5, help="laps of N; the median is reported (5)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.n < 1 or not 1 <= args.laps <= 63:
        ap.error("need --n >= 1 and 1 <= --laps <= 63")
    n, laps = args.n, args.laps

    kind = kvm_kind()
    print("KVM kind: %s" % kind)
    print("N = %d hypercalls per lap, %d laps; CPU: %s; Python %s"
          % (n, laps, cpu_model(), platform.python_version()))
    image = build_guest([("hbench.c", GUEST_SRC)])
    exe = build_driver()

    rows = []
    with tempfile.TemporaryDirectory(prefix="lguest-bench-") as dumpdir:
        g = BenchGuest(image, b"%d %d" % (n, laps + 1))     # one warm-up lap first
        try:
            if g.marker() != b"S":
                raise RuntimeError("the Guest did not reach its loop")
            sync = g.guest.vm.sync_regs
            snapshot_at_next_entry(g.guest, g.lg, dumpdir)
            py_laps, exits, assists = measure_python(g, laps)
            death = g.death()
        finally:
            g.close()
        rows.append(summarise("Python Host: int $0x1f -> Python -> Guest", "python", py_laps, n))
        c_laps, c_out = measure_c_guest(exe, dumpdir, g, n, laps, "min")
        c_outs = {"min": c_out}
        rows.append(summarise("C driver, same Guest + Switcher", "c_driver", c_laps, n))
        for variant, name in (("sregs", "C driver + KVM_GET_SREGS (Python's ioctls)"),
                              ("sync", "C driver, KVM_CAP_SYNC_REGS (no reg ioctls)")):
            if variant == "sync" and not has_sync_regs():
                continue
            v_laps, v_out = measure_c_guest(exe, dumpdir, g, n, laps, variant)
            rows.append(summarise(name, "c_driver_" + variant, v_laps, n))
            c_outs[variant] = v_out
    raw = run_driver(exe, "out", n, laps)
    rows.append(summarise("raw C out loop (real mode)", "raw_out", raw["laps_ns"], n))
    rows.append(summarise("raw Python out loop (ctypes KVM_RUN)", "raw_out_python",
                          measure_python_out(n, laps), n))
    rows.append(summarise("one vCPU ioctl (KVM_GET_REGS), C", "vcpu_ioctl",
                          run_driver(exe, "ioctl", n, laps)["laps_ns"], n))

    # The baseline is the C driver that makes the same kernel calls as the Python Host did: with
    # KVM_CAP_SYNC_REGS none for the registers, without it KVM_GET_REGS, KVM_GET_SREGS, KVM_SET_REGS.
    base = "c_driver_sync" if sync else "c_driver_sregs"
    c_out_base = c_outs["sync" if sync else "sregs"]
    base_row = next(r for r in rows if r["key"] == base)
    print()
    print_table(rows, base, "raw_out")
    print()
    py_over_c = rows[0]["ns_per_op"] / base_row["ns_per_op"]
    print("Python/C driver with the same exit path (%s): %.2fx (target <= 1.3x); "
          "Python/minimal C driver: %.2fx" % (base_row["mechanism"], py_over_c,
                                             rows[0]["ns_per_op"] / rows[1]["ns_per_op"]))
    py_total, py_in = split_python(image, n)
    c_in = int(c_out_base["in_run_ns"]) / int(c_out_base["run_calls"])
    c_total = base_row["ns_per_op"]
    print("Per round trip, inside KVM_RUN / outside it: Python Host %.1f / %.1f us, %s %.1f / %.1f us"
          % (py_in / 1e3, (py_total - py_in) / 1e3, base_row["mechanism"], c_in / 1e3,
             (c_total - c_in) / 1e3))
    print("Python Host exits during the laps: %s; assists: %d"
          % (", ".join("vector %d x %d" % kv for kv in sorted(exits.items())) or "none", assists))
    print("C driver: %s hypercalls, %s internal-error exits, %s Switcher exits; both Guests died "
          "with %r / %r" % (c_out["hcalls"], c_out["internal_exits"], c_out["io_exits"],
                            death, "CRASH: " + c_out["crash"].strip()))

    if args.json:
        result = {"benchmark": "hypercall", "kvm_kind": kind, "n": n, "laps": laps,
                  "cpu": cpu_model(), "python": platform.python_version(),
                  "results": rows, "python_over_c_driver": py_over_c, "target_python_over_c": 1.3,
                  "python_exits": {str(k): v for k, v in sorted(exits.items())},
                  "python_assists": assists, "python_death": death,
                  "c_driver": {k: v for k, v in c_out.items() if k != "laps_ns"}}
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print("JSON written to %s" % args.json)
    return 0


def has_sync_regs():
    kvm = KVM()
    try:
        return ioctl(kvm.fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS) > 0
    finally:
        kvm.close()


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    sys.exit(main())
