# H:500 Hypercalls: the Guest kernel's way of asking the Host for things it may not do itself.  The
# Guest puts a call number in eax and up to three arguments in edx, ebx and ecx, and executes
# `int $0x1F`.  Its gate in the Switcher's IDT is the only one with DPL 1, so the Guest kernel can
# use it and Guest user programs cannot.  By the time we get here the trap has been noted in the
# register frame; the run loop calls do_hypercalls() at the top of every iteration.
# :*
import ctypes
import struct
import time

from . import abi, interrupts_and_traps, io, segments

TRAP_HCALL_DONE = 255


def do_hcall(lg, call, a1, a2, a3):
    """Carry out one hypercall.  Returns the value for eax, or None to leave eax alone."""
    if call == abi.LHCALL_FLUSH_ASYNC:
        pass          # the trap itself made us drain the async ring: nothing more to do
    elif call == abi.LHCALL_LGUEST_INIT:
        lg.kill_guest("already have lguest_data")
    elif call == abi.LHCALL_CRASH:
        msg = lg.lgread(a1, 128)
        lg.kill_guest("CRASH: " + msg[:127].split(b"\0", 1)[0].decode("latin-1"))
    elif call == abi.LHCALL_FLUSH_TLB:
        lg.shadow.flush_tlb(a1 != 0)
    elif call == abi.LHCALL_LOAD_GDT:
        segments.load_guest_gdt(lg, a1, a2)
    elif call == abi.LHCALL_NEW_PGTABLE:
        lg.shadow.new_pgtable(a1)
    elif call == abi.LHCALL_LOAD_IDT_ENTRY:
        interrupts_and_traps.load_guest_idt_entry(lg, a1, a2, a3)
    elif call == abi.LHCALL_SET_STACK:
        interrupts_and_traps.guest_set_stack(lg, a1, a2, a3)
    elif call == abi.LHCALL_TS:
        lg.ts = a1
    elif call == abi.LHCALL_SET_CLOCKEVENT:
        lg.set_clockevent(a1)
    elif call == abi.LHCALL_HALT:
        lg.halted = True
    elif call == abi.LHCALL_BIND_DMA:
        return io.bind_dma(lg, a1, a2, a3 >> 8, a3 & 0xFF)
    elif call == abi.LHCALL_SEND_DMA:
        io.send_dma(lg, a1, a2)
    elif call == abi.LHCALL_SET_PTE:
        lg.shadow.set_pte(a1, a2, a3)
    elif call == abi.LHCALL_SET_PMD:
        lg.shadow.set_pmd(a1, a2)
    elif call == abi.LHCALL_LOAD_TLS:
        segments.guest_load_tls(lg, a1)
    else:
        lg.kill_guest("Bad hypercall %d\n" % call)
    return None


# H:510 The async ring.  Some hypercalls come in floods — a process's page tables being torn down is
# thousands of SET_PTEs — and 2.6.23's Guest queues them in a ring of 64 slots in lguest_data instead
# of trapping each time.  A status byte of 0 means "waiting for the Host", 0xFF "done".  The Host
# runs them on every exit, whatever the reason, before the call that trapped, and stops early if one
# of them sends a DMA to the Launcher, which must see it before anything else happens.
# :*
def do_async_hcalls(lg):
    status_at = lg.data_field("hcall_status")
    if not lg.address_ok(status_at, abi.LHCALL_RING_SIZE):
        lg.kill_guest("Fetching async hypercalls")
        return
    if lg.mem[status_at + lg.next_hcall] == 0xFF:
        return                                  # the usual case: nothing queued
    lg.step = "running the asynchronous hypercalls"
    status = bytes(lg.mem[status_at:status_at + abi.LHCALL_RING_SIZE])
    calls_at = lg.data_field("hcalls")
    for _ in range(abi.LHCALL_RING_SIZE):
        n = lg.next_hcall
        if status[n] == 0xFF:
            break
        lg.next_hcall = (n + 1) % abi.LHCALL_RING_SIZE
        regs = lg.lgread(calls_at + 16 * n, 16) if lg.address_ok(calls_at + 16 * n, 16) else None
        if regs is None:
            lg.kill_guest("Fetching async hypercalls")
            break
        eax, edx, ebx, ecx = _REGS4.unpack(regs)
        timed_hcall(lg, eax, edx, ebx, ecx)
        if not lg.address_ok(status_at + n, 1):
            lg.kill_guest("Writing result for async hypercall")
            break
        lg.mem[status_at + n] = 0xFF
        if lg.dma_is_pending or lg.dead is not None:
            break
    lg.step = None


# H:520 LGUEST_INIT, the first hypercall a Guest makes: it tells the Host where its lguest_data lives.
# The Host reads the no-interrupt window once, fills in what the Guest needs to know about it
# (4 MB to leave for the Switcher, the TSC frequency, the Guest's id and the time), and throws away
# the shadow page tables, since the Guest is about to set up its own.
# :*
def initialize(lg, gpa):
    if not lg.address_ok(gpa, ctypes.sizeof(abi.lguest_data)):
        lg.kill_guest("bad guest page %08x" % gpa)
        return
    lg.lguest_data = gpa
    d = abi.lguest_data
    lg.noirq_start = lg.lgread_u32(gpa + d.noirq_start.offset)
    lg.noirq_end = lg.lgread_u32(gpa + d.noirq_end.offset)
    lg.lgwrite_u32(gpa + d.reserve_mem.offset, abi.RESERVE_MEM)
    lg.lgwrite(gpa + d.guestid.offset, lg.guestid.to_bytes(2, "little"))
    lg.lgwrite_u32(gpa + d.tsc_khz.offset, lg.tsc_khz)
    interrupts_and_traps.write_timestamp(lg)
    lg.shadow.flush_tlb(True)


def do_hypercalls(lg):
    """The top of the run loop: the async ring, then the pending synchronous call."""
    f = lg.frame
    if lg.lguest_data is None:
        if f.trapnum != abi.LGUEST_TRAP_ENTRY:
            return
        lg.step = "running LGUEST_INIT"
        f.trapnum = TRAP_HCALL_DONE
        call = f.eax & 0xFFFFFFFF
        if call != abi.LHCALL_LGUEST_INIT:
            lg.kill_guest("hypercall %d before LGUEST_INIT" % call)
        else:
            initialize(lg, f.edx & 0xFFFFFFFF)
        lg.step = None
        return
    do_async_hcalls(lg)
    if lg.dma_is_pending or f.trapnum != abi.LGUEST_TRAP_ENTRY or lg.dead is not None:
        return
    call = f.eax & 0xFFFFFFFF
    lg.step = ("running hypercall %d", call)
    f.trapnum = TRAP_HCALL_DONE
    r = timed_hcall(lg, call, f.edx & 0xFFFFFFFF, f.ebx & 0xFFFFFFFF, f.ecx & 0xFFFFFFFF)
    if r is not None:
        f.eax = r
    lg.step = None


_REGS4 = struct.Struct("<4I")


def timed_hcall(lg, call, a1, a2, a3):
    """do_hcall(), counted and timed per hypercall number when the Launcher wants statistics."""
    if lg.stats is None:
        return do_hcall(lg, call, a1, a2, a3)
    t0 = time.perf_counter_ns()
    r = do_hcall(lg, call, a1, a2, a3)
    lg.stats.hcall(call, time.perf_counter_ns() - t0)
    return r
