# H:960 Statistics, kvm_stat's view of one Guest.  When the Launcher asks for them (`lguest
# --stats`), the run loop notes every exit: what kind it was (the trap vector the Switcher reported,
# a signal, an NMI, a kvm-pvm assist) and how long the Host took over it, from KVM_RUN returning to
# the next KVM_RUN — hypercalls, trap reflection and interrupt injection included, the HALT sleep
# not.  Each hypercall is also counted and timed by number.  Without --stats the run loop pays one
# test of `lg.stats` per exit.
# :*
import time

from . import abi

TRAP_NAMES = {0: "divide error", 1: "debug", 2: "NMI", 3: "breakpoint", 4: "overflow",
              6: "invalid opcode (#UD)", 7: "device not available (#NM)", 8: "double fault",
              10: "invalid TSS", 11: "segment not present", 12: "stack fault",
              13: "general protection (#GP)", 14: "page fault (#PF)", 16: "x87 error",
              17: "alignment check", 19: "SIMD error",
              abi.LGUEST_TRAP_ENTRY: "hypercall (int $0x1f)"}
HCALL_NAMES = {getattr(abi, n): n for n in dir(abi) if n.startswith("LHCALL_") and n != "LHCALL_RING_SIZE"}


ROW = "  %-40s %10s %12s %12s"
ROW_N = "  %-40s %10d %12.3f %12.1f"


def trap_kind(trapnum):
    return TRAP_NAMES.get(trapnum, "trap %d" % trapnum)


def exit_kind(reason, port, trapnum):
    from .kvm import KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IRQ_WINDOW_OPEN
    from .switcher import SWITCHER_PORT, SWITCHER_NMI_PORT
    if reason == KVM_EXIT_IO and port == SWITCHER_PORT:
        return trap_kind(trapnum)
    if reason == KVM_EXIT_INTR:
        return "signal (kick, timer, break)"
    if reason == KVM_EXIT_IO and port == SWITCHER_NMI_PORT:
        return "NMI"
    if reason == KVM_EXIT_IRQ_WINDOW_OPEN:
        return "interrupt window (a kick came in the Switcher)"
    if reason == KVM_EXIT_INTERNAL_ERROR:
        return "kvm-pvm assist: " + trap_kind(trapnum)
    return "KVM exit %d" % reason


class ExitStats:
    def __init__(self):
        self.exits = {}               # kind -> [count, ns the Host spent on it]
        self.hcalls = {}              # hypercall number -> [count, ns]
        self.guest_ns = 0             # time inside KVM_RUN
        self.kind = None              # the exit being handled, and when KVM_RUN returned
        self.since = 0

    def entering(self):
        """Called just before KVM_RUN: the exit being handled is done."""
        now = time.perf_counter_ns()
        if self.kind is not None:
            rec = self.exits.setdefault(self.kind, [0, 0])
            rec[0] += 1
            rec[1] += now - self.since
            self.kind = None
        return now

    def exited(self, entered, kind):
        self.since = time.perf_counter_ns()
        self.guest_ns += self.since - entered
        self.kind = kind

    def slept(self, ns):
        """The HALT sleep is not Host work: take it out of the exit being handled."""
        self.since += ns
        rec = self.exits.setdefault("HALT sleep (not Host work)", [0, 0])
        rec[0] += 1
        rec[1] += ns

    def hcall(self, call, ns):
        rec = self.hcalls.setdefault(call, [0, 0])
        rec[0] += 1
        rec[1] += ns

    def report(self, kind, paging):
        """A table for people: counts, total and average time per exit kind and per hypercall."""
        self.entering()
        host_ns = sum(ns for k, (_, ns) in self.exits.items() if not k.startswith("HALT"))
        n = sum(c for k, (c, _) in self.exits.items() if not k.startswith("HALT"))
        lines = ["exit statistics (%s, %s paging): %d exits, %.3f s in the Guest, %.3f s in the Host"
                 % (kind, paging, n, self.guest_ns / 1e9, host_ns / 1e9),
                 ROW % ("exit kind", "count", "total ms", "avg us")]
        # Host work first, the longest total at the top; the HALT sleep last, for the record.
        for k, (c, ns) in sorted(self.exits.items(), key=lambda kv: (kv[0].startswith("HALT"), -kv[1][1])):
            lines.append(ROW_N % (k, c, ns / 1e6, ns / c / 1e3))
        lines.append(ROW % ("hypercall", "count", "total ms", "avg us"))
        for call, (c, ns) in sorted(self.hcalls.items(), key=lambda kv: -kv[1][1]):
            name = "%s (%d)" % (HCALL_NAMES.get(call, "unknown"), call)
            lines.append(ROW_N % (name, c, ns / 1e6, ns / c / 1e3))
        return "\n".join(lines) + "\n"
