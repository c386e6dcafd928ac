#!/usr/bin/env python3
"""Shadow vs direct paging: system calls, page faults and context switches on each backend.

    python bench/paging.py [--n N] [--syscalls N] [--json FILE]

A benchmark, not a test: it prints what it measured and never judges it.  On kvm-pvm only the
shadow backend can run; on hardware KVM (or in the nested test machine: `python -m hw bench
bench/paging.py`) both run, side by side.
"""
# M:800 What does lguest's shadow paging cost next to the hardware's own two-dimensional paging?
# The same Guests run on both backends in one run: tests/guests/um_kernel.c makes system calls from
# user mode, and tests/guests/pt_bench.c takes page faults its kernel handles, re-reads pages its
# tables map after each full TLB flush (the shadow backend refills them, one fault each; the CPU
# just walks the Guest's tables), and switches page directories.  Each figure is the time between
# two of the Guest's checkpoints as the Launcher saw them, divided by the operations in between;
# for system calls, the difference of a loop of N and a loop of 2N, so the checkpoints cancel.
# The exits per operation come from the Host's own counts.  Under the nested test machine's
# software-emulated CPU absolute times mean nothing: read the ratios.
# :*
import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import lguest_kvm                                    # noqa: E402
from lguest_kvm import abi                           # noqa: E402
import guestrun                                      # noqa: E402


def run_timed(image, paging):
    """Run a Guest to its death: {checkpoint tag: (time, exits)}."""
    g = guestrun.Booted(image, paging=paging)
    marks = {}

    def on_dma(b, dma, key):
        tag = abi.lguest_dma.from_buffer(b.mem, dma).addr[0]
        marks[tag] = (time.perf_counter(), dict(b.lg.guest.exits))
    try:
        why = g.run(max_reads=10 ** 7, on_dma=on_dma)
    finally:
        g.close()
    if why != "CRASH: Power down":
        sys.exit(f"bench/paging.py: the Guest died on {paging}: {why}")
    return marks


def interval(marks, a, b):
    (ta, ea), (tb, eb) = marks[a], marks[b]
    return tb - ta, sum(eb.values()) - sum(ea.values())


def measure(paging, n, syscalls):
    rows = {}
    um = guestrun.build("um_kernel.c", "um_user.S", cflags=("-DMODE=0", f"-DLOOP_N={syscalls}"))
    m = run_timed(um, paging)
    (t1, e1), (t2, e2) = interval(m, 1, 2), interval(m, 2, 3)
    rows["syscall"] = ((t2 - t1) / syscalls, (e2 - e1) / syscalls)
    pt = guestrun.build("pt_bench.c", cflags=(f"-DN={n}",))
    m = run_timed(pt, paging)
    for name, a, per in (("pagefault (reflected)", 1, 1), ("touch after TLB flush (16 pages)", 2, 1),
                         ("context switch (NEW_PGTABLE x2)", 3, 1)):
        t, e = interval(m, a, a + 1)
        rows[name] = (t / (n * per), e / (n * per))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="operations per page-table loop")
    ap.add_argument("--syscalls", type=int, default=500, help="N for the system call loops")
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    kind = lguest_kvm.kvm_kind()
    pagings = ["shadow", "direct"] if kind in ("vmx", "svm") else ["shadow"]
    print(f"KVM kind: {kind}" + ("  (every Guest instruction is emulated: compare ratios only)"
                                 if kind == "kvm-pvm" else ""))
    if kind == "svm" and pathlib.Path("/sys/module/kvm_amd").exists() and _under_tcg():
        print("nested test machine: the CPU is QEMU's software emulation; absolute times mean "
              "nothing, the shadow/direct ratios do")
    results = {p: measure(p, args.n, args.syscalls) for p in pagings}
    names = list(results["shadow"])
    head = f"{'operation':34}" + "".join(f"{p + ' us/op':>15}{'exits/op':>10}" for p in pagings)
    print(head + (f"{'shadow/direct':>15}" if len(pagings) == 2 else ""))
    for name in names:
        line = f"{name:34}"
        for p in pagings:
            t, e = results[p][name]
            line += f"{t * 1e6:15.1f}{e:10.2f}"
        if len(pagings) == 2:
            ts, td = results["shadow"][name][0], results["direct"][name][0]
            line += f"{ts / td:14.2f}x"
        print(line)
    if len(pagings) == 1:
        print("direct paging needs hardware KVM: run `python -m hw bench bench/paging.py` for both")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"kind": kind, "results": {p: {k: {"seconds": t, "exits": e} for k, (t, e) in r.items()}
                                       for p, r in results.items()}}, indent=2))
    return 0


def _under_tcg():
    from lguest_bench.main import software_cpu
    return software_cpu()


if __name__ == "__main__":
    sys.exit(main())
