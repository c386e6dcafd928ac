"""lguest-bench: lguest's paravirtual mechanisms beside their baselines, measured in one run.

    lguest-bench [--quick] [--only NAME[,NAME...]] [--json FILE] [--svg FILE]
    python -m lguest_bench ...

For each benchmark: the median time per operation, p10 and p90 over the laps, how many laps, and
the ratio to its baseline measured in the same run.
"""
# M:910 The suite.  Each Guest benchmark is one loop of lguest_bench/guests/bench.c, run on every
# paging backend the KVM kind allows, timed by the Launcher in laps between the Guest's markers.
# Its baseline is what the mechanism cannot be cheaper than on this host, measured in the same run
# by lguest_bench/baselines.c: a bare KVM exit for everything that must leave the VM, the host's
# own page fault for a reflected one, the host's own stores for memburn.  `boot` is timed from
# starting the `lguest` command to its first line of Guest output, and has no baseline.
# :*
import argparse
import errno
import hashlib
import json
import mmap
import os
import pathlib
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import lguest_kvm
from lguest_kvm import abi, core, switcher
from lguest_bench import cdriver, devices, qemu
from launcher import loader
from launcher.guest.build import build_guest, cache_dir

HERE = pathlib.Path(__file__).resolve().parent
MARK_KEY, DMA_KEY = 0x2000, 0x3000
IRQ_PLEASE = 0x1000                 # a marker tag: the Guest asks for IRQ 1 (irq-latency)
IRQ_SEEN = 0x1001                   # a marker tag: IRQ 1's handler runs
TIMER_DELAY_NS = 1_000_000          # timer-accuracy: each clock event 1 ms ahead
MB = 1 << 20
# Rows whose mechanism lguest_bench/hcall_driver.c can also drive from C (the long-mode Switcher).
C_DRIVEN = ("hypercall", "hypercall-async", "pio", "dma-out", "pte-update", "context-switch")
PTE_VA = 0x00400000                             # the user page pte-update's SET_PTE changes

# name: (MODE, N full, N quick, laps full, laps quick, baseline, what one op is)
GUEST_BENCHES = {
    "hypercall": (1, 2000, 300, 7, 5, "exit", "LHCALL_FLUSH_ASYNC through int $0x1f"),
    "hypercall-async": (2, 4096, 640, 7, 5, "exit", "one async ring entry (64 per exit)"),
    "pio": (3, 1000, 150, 7, 5, "exit", "an `inb` the Host emulates after #GP"),
    "pagefault": (4, 1000, 150, 7, 5, "pagefault", "a #PF reflected to the Guest's handler"),
    "pte-update": (5, 1000, 150, 7, 5, "exit", "LHCALL_SET_PTE"),
    "context-switch": (6, 1000, 150, 7, 5, "exit", "LHCALL_NEW_PGTABLE between two directories"),
    "timer": (7, 300, 50, 7, 5, "exit", "SET_CLOCKEVENT 1 us, HALT until IRQ 0"),
    "dma-out": (8, 1000, 150, 7, 5, "exit", "SEND_DMA of 4 KiB the Launcher copies out"),
    "irq-latency": (11, 200, 40, 3, 3, "kick", "another thread's LHREQ_BREAK to IRQ 1's handler"),
    "timer-accuracy": (14, 1, 1, 201, 41, "timer", "how late HALT wakes for a clock event 1 ms ahead"),
    "demand-fault": (15, 1600, 320, 7, 5, "exit", "a read the Host maps from the Guest's tables"),
    "syscall": (12, 3000, 500, 7, 5, "syscall", "int $0x80 from user mode to a DPL 3 trap gate, iret back"),
    "cow": (13, 200, 30, 7, 5, "cow", "a user store to a read-only page: #PF, copy, two SET_PTEs"),
    "memburn-linear": (9, 1, 1, 3, 2, "memlin", "a store per 64-byte line through 64 MiB"),
    "memburn-random": (10, 1, 1, 3, 2, "memrand", "as many stores at random lines"),
}
MEMBURN_MB = {False: 64, True: 8}
KIND_NOTES = {
    "kvm-pvm": "kvm-pvm: KVM emulates every Guest instruction (about 1.5 M/s) and cannot page in "
               "32-bit mode, so only the shadow backend runs and figures are not those of hardware "
               "KVM; compare the ratios",
    "vmx": "hardware KVM (Intel VMX)",
    "svm": "hardware KVM (AMD SVM)",
}


def software_cpu():
    """Whether this machine's CPU is QEMU's software emulation (the nested test machine, hw/)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("model name") and "QEMU TCG" in line for line in f)
    except OSError:
        return False


def kind_note(kind):
    note = KIND_NOTES.get(kind, kind)
    if kind in ("vmx", "svm") and software_cpu():
        note += ", nested in QEMU's software-emulated CPU (TCG): absolute figures mean nothing there, " \
                "compare the ratios and the two backends"
    return note


def backends(kind):
    return ["shadow", "direct"] if kind in ("vmx", "svm") else ["shadow"]


# M:920 Running a benchmark Guest: laid out as the Launcher lays out any kernel, initialized, and
# read() in a loop.  A marker DMA records the time; a 4 KiB DMA for dma-out is copied out through
# a memoryview, as a device would, and acknowledged.  irq-latency takes the way input takes in the
# Launcher: when the Guest asks (a marker), a second thread, the Waker's stand-in, notes the time
# and writes LHREQ_BREAK, which kicks the vCPU out of the Guest; read() returns EAGAIN, we write
# LHREQ_IRQ and BREAK 0, and the next read() delivers IRQ 1, whose handler sends a marker.
# :*
def run_guest(image, paging, mem_mb=4, snapshot=None, facts=None):
    """Run a benchmark Guest to its end: (marker times, irq-latency samples).  With a directory
    `snapshot`, the VM is dumped there as its first lap starts, for the C driver (cdriver.py).
    A dict `facts` gets what the driver must also know, and the exits the Host took from the
    first counted lap (after facts["warmup_laps"]) to the last; with facts["time_kvm_run"] set,
    also the time spent inside KVM_RUN over that stretch (the Host's KVM_RUN is wrapped in a timer
    meanwhile), and with a cProfile.Profile in facts["profile"], the profile of that stretch."""
    facts = {} if facts is None else facts
    raw_run, in_run = core.kvm_run_raw, [0]

    def timed_run(fd):
        t = time.perf_counter_ns()
        r = raw_run(fd)
        in_run[0] += time.perf_counter_ns() - t
        return r
    size = mem_mb * MB
    mem = mmap.mmap(-1, size + 2 * 4096)
    page_offset, start = loader.load_elf(mem, pathlib.Path(image).read_bytes())
    pgdir = loader.setup_pagetables(mem, size, 0, page_offset)
    loader.setup_boot_params(mem, size, b"")
    marks, sink, latencies, waker, exits0 = [], bytearray(4096), [], None, None
    with lguest_kvm.open(mem, paging=paging) as lg:
        lg.write(struct.pack("<5I", abi.LHREQ_INITIALIZE, size // 4096 + 1, pgdir, start, page_offset))
        try:
            while True:
                try:
                    dma, key = struct.unpack("<II", lg.read(8))
                except OSError as e:
                    if e.errno == errno.EAGAIN:         # the Waker's BREAK: raise the IRQ, release it
                        lg.write(struct.pack("<II", abi.LHREQ_IRQ, 1))
                        lg.write(struct.pack("<II", abi.LHREQ_BREAK, 0))
                        continue
                    if e.errno == errno.ENOENT:
                        why = lg.read(1024).split(b"\0")[0].decode("latin-1")
                        break
                    raise
                if key == MARK_KEY:
                    tag = abi.lguest_dma.from_buffer_copy(mem, dma).addr[0]
                    if tag == IRQ_PLEASE:
                        if waker is None:
                            waker = Waker(lg)
                        waker.please()
                    elif tag == IRQ_SEEN:
                        latencies.append(time.perf_counter() - waker.sent)
                        waker.seen.set()
                    else:
                        marks.append(time.perf_counter())
                        g = lg.guest
                        if len(marks) == 1 and snapshot is not None:
                            cdriver.snapshot_at_next_entry(g, lg, snapshot)
                            facts.update(page_offset=page_offset, data=g.lguest_data,
                                         next=g.next_hcall, sync=g.vm.sync_regs,
                                         shadow=shadow_facts(g))
                        # The counts start where the samples do: after the warm-up lap, when
                        # the benchmark drops it.
                        if len(marks) == 1 + facts.get("warmup_laps", 0):
                            exits0 = sum(g.exits.values())
                            if facts.get("time_kvm_run"):
                                core.kvm_run_raw = timed_run
                            if facts.get("profile"):
                                facts["profile"].enable()
                        if exits0 is not None:
                            facts["exits"] = sum(g.exits.values()) - exits0
                            facts["in_run"] = in_run[0] * 1e-9
                    continue
                d = abi.lguest_dma.from_buffer_copy(mem, dma)
                n = d.len[0] if key == DMA_KEY else 0
                if n:
                    with memoryview(mem) as mv:
                        sink[:n] = mv[d.addr[0]:d.addr[0] + n]
                struct.pack_into("<I", mem, dma + abi.lguest_dma.used_len.offset, n)
        finally:
            core.kvm_run_raw = raw_run
            if facts.get("profile"):
                facts["profile"].disable()
            if waker is not None:
                waker.stop()
                facts["breaks_again"] = waker.again
    mem.close()
    if why != "CRASH: Power down":
        raise RuntimeError(f"the benchmark Guest died: {why}")
    return marks, latencies


class Waker:
    """A thread that, when asked, waits 200 us (the Guest is back in its loop), notes the time
    and writes LHREQ_BREAK 1, which returns once the Launcher thread wrote BREAK 0.  If the
    handler has not run half a second later, it breaks again, as a Waker would on more input:
    an IRQ raised while a kick had stopped the vCPU inside the Switcher waits for the Guest's
    next exit, and a Guest spinning under hardware paging makes none (counted in `again`)."""

    def __init__(self, lg):
        self.lg, self.sent, self.stopping, self.again = lg, 0.0, False, 0
        self.go, self.seen = threading.Semaphore(0), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def please(self):
        self.go.release()

    def run(self):
        while True:
            self.go.acquire()
            if self.stopping:
                return
            time.sleep(0.0002)
            self.seen.clear()
            self.sent = time.perf_counter()
            try:
                self.lg.write(struct.pack("<II", abi.LHREQ_BREAK, 1))
                while not self.seen.wait(0.5) and not self.stopping:
                    self.again += 1
                    self.lg.write(struct.pack("<II", abi.LHREQ_BREAK, 1))
            except OSError:
                return                      # the Guest is gone: the run loop will say why

    def stop(self):
        """End the thread, releasing a BREAK it may be waiting in (the Guest may have died)."""
        self.stopping = True
        self.go.release()
        while self.thread.is_alive():
            try:
                self.lg.write(struct.pack("<II", abi.LHREQ_BREAK, 0))
            except OSError:
                pass
            self.thread.join(0.1)


def guest_bench(name, paging, quick, facts=None):
    """(samples, C driver samples or None); `facts` as run_guest() fills it, plus "ops"."""
    mode, n_full, n_quick, laps_full, laps_quick, _, _ = GUEST_BENCHES[name]
    n, laps = (n_quick, laps_quick) if quick else (n_full, laps_full)
    mem_mb = MEMBURN_MB[quick]
    image = build_guest([HERE / "guests" / "bench.c"],
                        cflags=(f"-DMODE={mode}", f"-DN={n}", f"-DLAPS={laps}", f"-DMEM_MB={mem_mb}",
                                f"-DDELAY_NS={TIMER_DELAY_NS}"))
    facts = {} if facts is None else facts
    warmup = 1 if laps > 2 else 0               # the first lap warms caches and shadows
    facts["ops"], facts["warmup_laps"] = n * (laps - warmup), warmup
    with tempfile.TemporaryDirectory(prefix="lguest-bench-") as dump:
        use_c = name in C_DRIVEN and paging == "shadow" and not facts.get("time_kvm_run")
        marks, latencies = run_guest(image, paging, mem_mb=mem_mb + 24 if mode in (9, 10) else 16,
                                     snapshot=dump if use_c else None, facts=facts)
        c_samples = c_driver_bench(name, dump, n, laps, facts) if use_c else None
    if name == "irq-latency":
        if len(latencies) != n * laps:
            raise RuntimeError(f"irq-latency: {len(latencies)} interrupts seen, not {n * laps}")
        facts["wall"] = marks[-1] - marks[warmup]
        return latencies[n * warmup:], None
    facts["wall"] = marks[-1] - marks[warmup]
    samples = [(b - a) / n for a, b in zip(marks, marks[1:])][warmup:]
    if name == "timer-accuracy":
        samples = [s - TIMER_DELAY_NS * 1e-9 for s in samples]
    return samples, c_samples


# M:925 The same Guest with its mechanism driven from C (lguest_bench/hcall_driver.c): from the
# moment its first lap starts, a C program runs the rest of the Python Host's VM, doing the least
# a Host can for that Guest — the hypercall, the async ring, the `inb` after #GP, the DMA copied
# out, the SET_PTE written into the shadow entry, the NEW_PGTABLE to another shadow root — with the
# registers taken as the Python Host takes them.  The difference is the Python.  The shadow page
# tables themselves are in the Host slot the driver copies; what it cannot copy, Python's record
# of which root and which word shadows what, shadow_facts() tells it on its command line.
# :*
def shadow_facts(g):
    """What the C driver must be told of the shadow page tables (their bookkeeping is Python's):
    every root as CR3:PML4, the one loaded, the Host-slot word shadowing PTE_VA in each root that
    has one, and how many Guest pages a PTE may name."""
    sh = getattr(g, "shadow", None)
    if sh is None or not hasattr(sh, "roots"):
        return []
    out = [f"cr3={sh.current.pml4:#x}", f"pfns={min(g.pfn_limit, g.backed_pages)}"]
    for r in sh.roots:
        if r.used:
            out.append(f"root={r.cr3:#x}:{r.pml4:#x}")
            word = sh.pte_word(r, PTE_VA)
            if word is not None:
                out.append(f"pte={r.cr3:#x}:{PTE_VA:#x}:{word:#x}")
    return out


def c_driver_bench(name, dump, n, laps, f):
    out = cdriver.run_driver(
        cdriver.build_driver(), "guest", dump, n, laps, f["page_offset"], switcher.FRAME_OFFSET,
        switcher.FRAME_SIZE, "sync" if f["sync"] else "sregs", f"mark={MARK_KEY}", f"dma={DMA_KEY}",
        f"data={f['data']}", f"status={abi.lguest_data.hcall_status.offset}",
        f"calls={abi.lguest_data.hcalls.offset}", f"next={f['next']}", "count=0", *f["shadow"])
    if out.get("crash", "").strip() != "Power down":
        raise RuntimeError("the C driver's Guest died: %r" % out.get("crash"))
    # It did the work: every op of every lap went through the mechanism it stands for.
    done = {"hypercall": int(out["hcalls"]) - laps - 1, "hypercall-async": int(out["async"]),
            "pio": int(out["pios"]), "dma-out": int(out["hcalls"]) - laps - 1,
            "pte-update": int(out["ptes"]), "context-switch": int(out["switches"])}[name]
    if done != n * laps:
        raise RuntimeError(f"the C driver did {done} {name} ops, not {n * laps}")
    return [t * 1e-9 / n for t in out["laps_ns"]][f["warmup_laps"]:]


# M:930 The baselines are a C program compiled in the run (cached by the hash of its source and
# the compiler), run three times each; the median counts.
# :*
def baselines_binary():
    src = HERE / "baselines.c"
    cc = shutil.which("gcc") or "gcc"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    flags = ["-O2", "-pthread"]
    key = hashlib.sha256(src.read_bytes() + version.encode() + " ".join(flags).encode()).hexdigest()[:16]
    out = cache_dir() / "bench" / f"baselines-{key}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp%d" % os.getpid())
        subprocess.run([cc, *flags, "-o", str(tmp), str(src)], check=True)
        tmp.rename(out)
    return out


def baseline(binary, what, quick):
    """(seconds per op, the other figures the program printed: for timer, its p99), median of 3."""
    args = {"exit": ["exit", "2000" if quick else "20000"],
            "kick": ["kick", "100" if quick else "500"],
            "timer": ["timer", "100" if quick else "500", str(TIMER_DELAY_NS)],
            "pagefault": ["pagefault", "2000" if quick else "20000"],
            "syscall": ["syscall", "100000"],
            "cow": ["cow", "2000" if quick else "20000"],
            "memlin": ["memlin", str(MEMBURN_MB[quick]), "3"],
            "memrand": ["memrand", str(MEMBURN_MB[quick]), "3"]}[what]
    runs = [[float(x) * 1e-9 for x in subprocess.run([str(binary), *args], capture_output=True,
                                                     text=True, check=True).stdout.split()]
            for _ in range(3)]
    return statistics.median(r[0] for r in runs), [statistics.median(col) for col in zip(*runs)][1:]


def boot_bench(quick):
    """`lguest 64` to the first line the bundled Guest prints, in seconds, per start."""
    samples = []
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    for _ in range(2 if quick else 5):
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "launcher", "64"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        line = p.stdout.readline()
        samples.append(time.perf_counter() - t0)
        p.kill()
        p.wait()
        if not line:
            raise RuntimeError("lguest 64 printed nothing")
    return samples


def summarize(samples):
    s = sorted(samples)
    q = statistics.quantiles(s, n=100, method="inclusive") if len(s) > 1 else [s[0]] * 99
    return {"median": statistics.median(s), "p10": q[9], "p90": q[89], "p99": q[98], "runs": len(s)}


# M:940 The output: a table for people, JSON for programs, and an SVG bar chart of the ratios
# drawn by hand (log scale: 1x at the left edge), so that nothing beyond the standard library is
# needed to see the result.
# :*
def fmt_time(sec):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if sec >= scale:
            return f"{sec / scale:.2f} {unit}"
    return f"{sec / 1e-9:.0f} ns"


def table(results, kind):
    lines = [f"lguest-bench on {kind}: {kind_note(kind)}",
             f"{'benchmark':18} {'paging':7} {'median':>11} {'p10':>11} {'p90':>11} {'runs':>5} "
             f"{'baseline':>11} {'ratio':>9} {'C host':>11} {'vs C':>6}  baseline is"]
    for r in results:
        base = fmt_time(r["baseline"]) if r["baseline"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        c_host = fmt_time(r["c_driver"]) if r.get("c_driver") else "-"
        vs_c = f"{r['over_c_driver']:.2f}x" if r.get("over_c_driver") else "-"
        lines.append(f"{r['name']:18} {r['paging']:7} {fmt_time(r['median']):>11} "
                     f"{fmt_time(r['p10']):>11} {fmt_time(r['p90']):>11} {r['runs']:>5} "
                     f"{base:>11} {ratio:>9} {c_host:>11} {vs_c:>6}  {r['baseline_name']}")
    return "\n".join(lines)


def svg(results, kind):
    import math
    rows = [r for r in results if r["ratio"]]
    width, bar_x, row_h = 760, 260, 22
    top = max((math.log10(r["ratio"]) for r in rows), default=1) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{40 + row_h * len(rows)}" '
           'font-family="sans-serif" font-size="12">',
           f'<text x="8" y="18" font-weight="bold">lguest-bench on {kind}: ratio to baseline '
           '(log scale)</text>']
    for i, r in enumerate(rows):
        y = 30 + i * row_h
        w = max(1.0, (width - bar_x - 80) * max(math.log10(r["ratio"]), 0) / top)
        colour = "#4a7ab5" if r["paging"] == "shadow" else "#d08a2c"
        out += [f'<text x="8" y="{y + 14}">{r["name"]} ({r["paging"]})</text>',
                f'<rect x="{bar_x}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{colour}"/>',
                f'<text x="{bar_x + w + 6:.1f}" y="{y + 14}">{r["ratio"]:.2f}x</text>']
    return "\n".join(out + ["</svg>"]) + "\n"


BASELINE_NAMES = {"exit": "a bare KVM exit (C)", "kick": "a signal out of KVM_RUN (C)",
                  "timer": "a POSIX timer's lateness (C)", "pagefault": "a host page fault (C)",
                  "syscall": "the host's own system call (C)", "cow": "a host copy-on-write fault (C)",
                  "memlin": "the host's own stores (C)", "memrand": "the host's own stores (C)",
                  "preadv": "the host's os.preadv, same requests", "pwritev": "the host's os.pwritev, "
                  "same requests"}
# lguest-bench row -> the QEMU benchmark that runs the same mechanism without lguest's ABI.
QEMU_COUNTERPARTS = {"pio": "qemu-pio", "syscall": "qemu-syscall", "pagefault": "qemu-pagefault",
                     "memburn-linear": "qemu-memburn"}


def run_one(name, paging, quick, binary, base_cache):
    """One row of the table."""
    own_base, extra = None, {}
    if name == "boot":
        samples, base_name, what = boot_bench(quick), "-", "lguest 64 to first line"
    elif name in devices.DEVICE_BENCHES:
        samples, own_base, extra = devices.device_bench(name, paging, quick)
        what, base_name = devices.DEVICE_BENCHES[name]
        if base_name == "self":
            base_name = "pwritev" if name == "block-write" else "preadv"
    else:
        samples, c_samples = guest_bench(name, paging, quick)
        base_name, what = GUEST_BENCHES[name][5], GUEST_BENCHES[name][6]
        if c_samples:
            extra = {"c_driver": statistics.median(c_samples)}
    base = base_more = None
    if own_base is not None:
        base = own_base
    elif base_name != "-":
        if base_name not in base_cache:
            base_cache[base_name] = baseline(binary, base_name, quick)
        base, base_more = base_cache[base_name]
    row = {"name": name, "paging": paging, **summarize(samples), "baseline": base,
           "baseline_name": BASELINE_NAMES.get(base_name, "none"), "what": what, **extra}
    if name == "timer-accuracy" and base_more:
        row["baseline_p99"] = base_more[0]
    row["ratio"] = row["median"] / base if base else None
    row["over_c_driver"] = row["median"] / row["c_driver"] if row.get("c_driver") else None
    return row


# M:945 Where the time goes.  With --where every Guest benchmark runs once more with the Host's
# KVM_RUN wrapped in a timer: per op, how many exits the Host took, how long the vCPU spent inside
# KVM_RUN (the exit and entry, the Guest's own instructions, on kvm-pvm their emulation) and how
# long the Host spent outside it (its Python, the Launcher's read() loop, the ioctls other than
# KVM_RUN, and any sleep: a halted Guest's wait for its timer, irq-latency's Waker pausing before
# its BREAK).  What the Host spends awake outside is what a faster Host could remove; what is
# inside, only a faster KVM, or fewer exits.
# :*
def where_row(name, paging, quick):
    facts = {"time_kvm_run": True}
    guest_bench(name, paging, quick, facts)
    ops = facts["ops"]
    return {"name": name, "paging": paging, "exits_per_op": facts["exits"] / ops,
            "in_kvm_run": facts["in_run"] / ops, "outside": (facts["wall"] - facts["in_run"]) / ops}


def where_table(rows):
    lines = ["Where the time goes, per op (a second run with KVM_RUN timed; outside includes HALT "
             "sleeps):",
             f"{'benchmark':18} {'paging':7} {'exits':>7} {'in KVM_RUN':>11} {'outside':>11} "
             f"{'outside %':>9}"]
    for w in rows:
        total = w["in_kvm_run"] + w["outside"]
        lines.append(f"{w['name']:18} {w['paging']:7} {w['exits_per_op']:>7.2f} "
                     f"{fmt_time(w['in_kvm_run']):>11} {fmt_time(w['outside']):>11} "
                     f"{100 * w['outside'] / total if total else 0:>8.0f}%")
    return "\n".join(lines)


# M:947 And inside the Host, which Python?  With --profile every Guest benchmark runs once more
# under cProfile, switched on at the first lap marker, and the functions with the most time of
# their own are listed per op.  The profiler adds to every call it sees, so the figures are larger
# than the Host's real ones; what they are good for is the order.  kvm_run_raw is KVM_RUN itself.
# :*
def profile_row(name, paging, quick, top=5):
    import cProfile
    import pstats
    facts = {"profile": cProfile.Profile()}
    guest_bench(name, paging, quick, facts)
    ops = facts["ops"]
    stats = pstats.Stats(facts["profile"]).stats
    own = sorted(((tt, f"{pathlib.Path(file).stem}.{func}" if file != "~" else func.strip("<>"))
                  for (file, _, func), (_, _, tt, _, _) in stats.items()), reverse=True)
    return {"name": name, "paging": paging, "top": [(what, tt / ops) for tt, what in own[:top]]}


def profile_table(rows):
    lines = ["Where the Host's time goes, per op (cProfile, own time of the top functions; the "
             "profiler inflates them):"]
    for p in rows:
        lines.append(f"{p['name']:18} {p['paging']:7} " + ", ".join(
            f"{what} {fmt_time(t)}" for what, t in p["top"]))
    return "\n".join(lines)


def qemu_rows(results, quick, progress):
    """The QEMU baselines of the rows that have one: (rows, None) or ([], why not)."""
    wanted = [(q, n) for n, q in QEMU_COUNTERPARTS.items() if any(r["name"] == n for r in results)]
    if not wanted:
        return [], None
    progress("QEMU")
    why = qemu.qemu_unavailable_reason()
    if why:
        return [], why
    rows = []
    for qname, counterpart in wanted:
        progress(qname)
        row = {"name": qname, "counterpart": counterpart, "what": qemu.QEMU_BENCHES[qname]}
        try:
            row.update(summarize(qemu.qemu_bench(qname, quick)))
        except qemu.QemuError as e:
            row["not_run"] = str(e)
        rows.append(row)
    return rows, None


def qemu_table(rows, results):
    lines = ["QEMU (qemu-system-i386 -accel kvm) on the same KVM, the same mechanism without lguest:",
             f"{'benchmark':18} {'median':>11} {'runs':>5}  {'lguest':>11} {'paging':7} {'lguest/QEMU':>11}"]
    for q in rows:
        if "not_run" in q:
            lines.append(f"{q['name']:18} not run: {q['not_run']}")
            continue
        for r in (r for r in results if r["name"] == q["counterpart"]):
            lines.append(f"{q['name']:18} {fmt_time(q['median']):>11} {q['runs']:>5}  "
                         f"{fmt_time(r['median']):>11} {r['paging']:7} {r['median'] / q['median']:>10.2f}x")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="lguest-bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter laps (under a minute)")
    ap.add_argument("--only", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--no-qemu", action="store_true", help="skip the QEMU baselines")
    ap.add_argument("--where", action="store_true",
                    help="run each Guest benchmark again with KVM_RUN timed: exits per op, time "
                         "inside KVM_RUN and outside it")
    ap.add_argument("--profile", action="store_true",
                    help="run each Guest benchmark again under cProfile: the Host's functions "
                         "with the most time of their own, per op")
    ap.add_argument("--json", help="write the results as JSON to this file")
    ap.add_argument("--svg", help="draw the ratios as an SVG bar chart in this file")
    args = ap.parse_args(argv)
    names = list(GUEST_BENCHES) + list(devices.DEVICE_BENCHES) + ["boot"]
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in names]
        if unknown:
            ap.error("unknown benchmark %s (choose from %s)" % (", ".join(unknown), ", ".join(names)))
        names = [n for n in names if n in wanted]
    try:
        kind = lguest_kvm.kvm_kind()
        binary = baselines_binary()
    except (OSError, subprocess.CalledProcessError) as e:
        sys.stderr.write(f"lguest-bench: {e}\n")
        return 1
    jobs = [(n, p) for n in names if n != "boot" for p in backends(kind)]
    jobs += [("boot", "default")] if "boot" in names else []
    results, base_cache = [], {}
    t_start = time.monotonic()

    def progress(what):
        sys.stderr.write(f"\r\x1b[Klguest-bench: {what}...")
        sys.stderr.flush()
    for i, (name, paging) in enumerate(jobs, 1):
        progress(f"[{i}/{len(jobs)}] {name} ({paging})")
        results.append(run_one(name, paging, args.quick, binary, base_cache))
    qrows, qwhy = ([], "--no-qemu") if args.no_qemu else qemu_rows(results, args.quick, progress)
    guest_rows = [(r["name"], r["paging"]) for r in results if r["name"] in GUEST_BENCHES]
    where, profiles = [], []
    for name, paging in guest_rows if args.where else ():
        progress(f"where: {name} ({paging})")
        where.append(where_row(name, paging, args.quick))
    for name, paging in guest_rows if args.profile else ():
        progress(f"profile: {name} ({paging})")
        profiles.append(profile_row(name, paging, args.quick))
    sys.stderr.write(f"\r\x1b[Klguest-bench: {len(jobs)} benchmarks in {time.monotonic() - t_start:.1f} s\n")
    print(table(results, kind))
    for r in results:
        if r["name"] == "timer-accuracy":
            print(f"timer-accuracy ({r['paging']}): woke {fmt_time(r['median'])} late (median), "
                  f"{fmt_time(r['p99'])} (p99) for a clock event {TIMER_DELAY_NS // 1000} us ahead; "
                  + (f"a bare POSIX timer here: {fmt_time(r['baseline'])} and {fmt_time(r['baseline_p99'])}"
                     if r.get("baseline_p99") else "no baseline"))
    if where:
        print(where_table(where))
    if profiles:
        print(profile_table(profiles))
    if qrows:
        print(qemu_table(qrows, results))
    elif qwhy:
        print(f"QEMU baselines: not run: {qwhy}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"kind": kind, "note": kind_note(kind), "quick": args.quick,
             "results": results, "qemu": qrows, "qemu_not_run": qwhy, "where": where,
             "profile": profiles},
            indent=2) + "\n")
    if args.svg:
        pathlib.Path(args.svg).write_text(svg(results, kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
