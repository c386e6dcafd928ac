# H:400 Interrupts and traps.  A Guest kernel expects the 32-bit protected-mode world: when something
# happens, the CPU pushes eflags, cs and eip (and maybe an error code) on its stack and jumps to its
# IDT handler.  The Guest cannot have a real IDT — the Host owns that — so it hands its entries to the
# Host with LOAD_IDT_ENTRY, and the Host does the pushing itself, in set_guest_interrupt(), exactly as
# the CPU would have done at privilege level 1.
#
# In 2.6.23 some traps went straight to the Guest without the Host ever seeing them ("direct traps").
# In this backend the vCPU runs in long mode, where the CPU pushes 64-bit frames the Guest would not
# understand, so every trap comes through the Host, which builds the 32-bit frame; the exit counts
# show what that costs.
# :*
import errno
import time

from . import abi, assist

ERRCODE_TRAPS = frozenset((8, 10, 11, 12, 13, 14, 17))
_GATE_CLEARS = 0x34100          # TF, NT, RF and VM: what going through any gate turns off
GATE_INTERRUPT, GATE_TRAP = 0xE, 0xF


def idt_type(hi):
    return (hi >> 8) & 0xF


def idt_present(hi):
    return bool(hi & 0x8000)


# H:410 Building the Guest's trap frame (set_guest_interrupt).  If the Guest was in user mode we switch
# to the kernel stack it told us about with SET_STACK and push the old ss and esp first; then eflags
# (with the virtual interrupt flag folded in), cs, eip and maybe an error code.  The Host turns stack
# addresses into Guest-physical ones by subtracting page_offset, as 2.6.23 did: the Guest kernel stack
# must be in the linear map.  An interrupt gate also turns the Guest's virtual interrupts off.
# :*
def set_guest_interrupt(lg, lo, hi, has_err):
    f = lg.frame
    if f.ss & 3 != abi.GUEST_PL:
        ss, esp = lg.ss1, lg.esp1
        words = [f.ss & 0xFFFF, f.esp & 0xFFFFFFFF]
    else:
        ss, esp = f.ss, f.esp & 0xFFFFFFFF
        words = []
    eflags = f.eflags & 0xFFFFFFFF
    if lg.lguest_data is not None:
        irq_enabled = lg.lgread_u32(lg.data_field("irq_enabled"))
        if not irq_enabled & abi.X86_EFLAGS_IF:
            eflags &= ~abi.X86_EFLAGS_IF
    words += [eflags, f.cs & 0xFFFF, f.eip & 0xFFFFFFFF]
    if has_err:
        words.append(f.errcode & 0xFFFFFFFF)
    for w in words:
        esp = (esp - 4) & 0xFFFFFFFF
        lg.lgwrite_u32((esp - lg.page_offset) & 0xFFFFFFFF, w)
    f.ss, f.esp, f.cs = ss, esp, abi.GUEST_CS
    f.eip = (lo & 0xFFFF) | (hi & 0xFFFF0000)
    f.eflags &= ~_GATE_CLEARS
    if idt_type(hi) == GATE_INTERRUPT and lg.lguest_data is not None:
        if not lg.poke_u32(lg.data_field("irq_enabled"), 0):
            lg.kill_guest("Disabling interrupts")


def deliver_trap(lg, num):
    """Reflect trap `num` to the Guest; False if it has no handler for it."""
    if num >= 64:
        return False
    lo, hi = lg.idt[num]
    if not idt_present(hi):
        return False
    set_guest_interrupt(lg, lo, hi, num in ERRCODE_TRAPS)
    return True


# H:420 What the Host does with each trap (lguest_arch_handle_trap).  A #GP may be an IN or OUT the
# Guest kernel is allowed to think it did; a #PF may be a page the shadow tables have not got yet; a
# hypercall has already been done at the top of the run loop; an interrupt of the Host's own is just
# a way out.  Anything else goes back to the Guest, which had better have a handler for it.
# :*
def handle_trap(lg, trapnum):
    f = lg.frame
    if trapnum == 6:
        trapnum = assist.fixup_ud(lg) or 6      # kvm-pvm: a user-mode `int n` arrives as #UD
    if trapnum == 13:
        if f.errcode == 0 and emulate_insn(lg):
            return
        if assist.fixup_gp(lg) or direct_int(lg):
            return
    elif trapnum == 14:
        if lg.shadow.demand_page(f.cr2 & 0xFFFFFFFF, f.errcode):
            return
        if lg.dead is not None:
            return
        # Before LGUEST_INIT there is no lguest_data yet, and 2.6.23 wrote cr2 to its offset from 0.
        where = lg.data_field("cr2") if lg.lguest_data is not None else 8
        if not lg.poke_u32(where, f.cr2 & 0xFFFFFFFF):
            lg.kill_guest("Writing cr2")
            return
    elif trapnum == 7:
        if not lg.ts:
            return
    elif trapnum == 2 or trapnum >= 32 or trapnum == abi.LGUEST_TRAP_ENTRY:
        return                                   # NMI, a kick, a hypercall: nothing to reflect
    if lg.dead is not None:
        return
    if not deliver_trap(lg, trapnum):
        extra = f.cr2 if trapnum == 14 else f.errcode
        lg.kill_guest("unhandled trap %d at %#x (%#x)" % (trapnum, f.eip & 0xFFFFFFFF,
                                                            extra & 0xFFFFFFFF))


# H:425 Direct traps.  2.6.23 copied some of the Guest's gates into the real IDT, so the CPU took
# those traps straight to the Guest: vectors below 32 and the system call vector 0x80, when the Guest
# made them trap gates, except the four the Host must see (7, 13, 14 and the hypercall).  Our IDT
# cannot hold 32-bit gates, so a Guest `int $0x80` raises #GP(0x80*8+2) here, and the Host does what
# the CPU would have done with the Guest's gate: check its DPL, step over the `int`, and build the
# same frame, leaving the virtual interrupt flag alone as a trap gate does.  Hardware exceptions on
# those vectors (a divide error, say) already reach the Guest through deliver_trap().
# :*
def direct_trap(lg, vector):
    if not (vector < 32 or vector == abi.SYSCALL_VECTOR) or vector in (7, 13, 14, abi.LGUEST_TRAP_ENTRY):
        return None
    lo, hi = lg.syscall_idt if vector == abi.SYSCALL_VECTOR else lg.idt[vector]
    if not idt_present(hi) or idt_type(hi) != GATE_TRAP:
        return None
    return lo, hi


def direct_int(lg):
    f = lg.frame
    if f.errcode & 7 != 2:
        return False
    vector = (f.errcode >> 3) & 0xFF
    gate = direct_trap(lg, vector)
    if gate is None or (gate[1] >> 13) & 3 < f.cs & 3:
        return False
    code = assist.read_code(lg, f.eip, 2)
    if code == bytes([0xCD, vector]):
        length = 2
    elif (code[:1] == b"\xcc" and vector == 3) or (code[:1] == b"\xce" and vector == 4):
        length = 1
    else:
        return False
    f.eip = (f.eip + length) & 0xFFFFFFFF
    f.eflags &= ~0x10000      # RF came with the fault that brought the `int` here; an `int` has none
    lg.direct_traps += 1
    set_guest_interrupt(lg, gate[0], gate[1], False)
    return True


# H:430 IN and OUT.  The Guest kernel runs at CPL 1 with no I/O permission, so a stray port access
# (Linux probes a few at boot) raises #GP.  2.6.23 let such instructions "succeed": OUT does nothing,
# IN reads all ones.  Only kernel addresses are looked at, and the instruction is found by
# subtracting page_offset from EIP.
# :*
def emulate_insn(lg):
    f = lg.frame
    eip = f.eip & 0xFFFFFFFF
    if eip < lg.page_offset:
        return False
    gpa = eip - lg.page_offset
    if not lg.address_ok(gpa, 2):
        return False
    insn = lg.mem[gpa]
    shift, length = 0, 0
    if insn == 0x66:
        shift, length = 16, 1
        insn = lg.mem[gpa + 1]
    op = insn & 0xFE
    if op == 0xE4:
        length, is_in = length + 2, True
    elif op == 0xEC:
        length, is_in = length + 1, True
    elif op == 0xE6:
        length, is_in = length + 2, False
    elif op == 0xEE:
        length, is_in = length + 1, False
    else:
        return False
    if is_in:
        if insn & 1:
            f.eax = 0xFFFFFFFF
        else:
            f.eax = (f.eax | (0xFFFF << shift)) & 0xFFFFFFFF
    f.eip = (eip + length) & 0xFFFFFFFF
    return True


# H:440 The Guest's IDT (LOAD_IDT_ENTRY).  Some vectors are the Host's business and are quietly
# ignored: NMI, double fault, the hypercall gate, and 15.  The rest are checked and stored with the
# selector forced to the Guest's kernel code segment.
# :*
def load_guest_idt_entry(lg, num, lo, hi):
    if num in (2, 8, 15, abi.LGUEST_TRAP_ENTRY):
        return
    if num < 64:
        slot = num
    elif num == abi.SYSCALL_VECTOR:
        slot = None
    else:
        return
    if not idt_present(hi):
        entry = (0, 0)
    else:
        if idt_type(hi) not in (GATE_INTERRUPT, GATE_TRAP):
            lg.kill_guest("bad IDT type %d" % idt_type(hi))
            return
        entry = ((abi.GUEST_CS << 16) | (lo & 0xFFFF), hi & 0xFFFFEF00)
    if slot is None:
        lg.syscall_idt = entry
    else:
        lg.idt[slot] = entry
    if num < 32 or num == abi.SYSCALL_VECTOR:
        lg.switcher.guest_gate_changed(lg, num, direct_trap(lg, num))


def guest_set_stack(lg, seg, esp, pages):
    if seg & 3 != abi.GUEST_PL:
        lg.kill_guest("bad stack segment %d" % seg)
    if pages > 2:
        lg.kill_guest("bad stack pages %u" % pages)
    lg.ss1, lg.esp1, lg.stack_pages = seg, esp, pages
    lg.switcher.guest_stack_changed(seg, esp)
    if lg.dead is None:
        lg.pin_stack_pages()


# H:450 Interrupts (maybe_do_interrupt): at most one per entry into the Guest, the lowest-numbered
# pending one that the Guest has not blocked, never before LGUEST_INIT, never inside the Guest's
# iret sequence [noirq_start, noirq_end), and only while the Guest's virtual interrupt flag is on —
# unless the Guest is halted, which means "wake me": then interrupts are turned on for it.
# :*
def maybe_do_interrupt(lg):
    if lg.lguest_data is None or not lg.irqs_pending:
        return
    blocked = lg.peek_u32(lg.data_field("blocked_interrupts"))
    if blocked is None:
        return
    pending = lg.irqs_pending & ~blocked & 0xFFFFFFFF
    if not pending:
        return
    irq = (pending & -pending).bit_length() - 1
    f = lg.frame
    if lg.noirq_start <= (f.eip & 0xFFFFFFFF) < lg.noirq_end:
        return
    if not lg.halted and not lg.peek_u32(lg.data_field("irq_enabled")):
        return
    lg.step = ("delivering interrupt %d", irq)
    if lg.halted:
        if not lg.poke_u32(lg.data_field("irq_enabled"), abi.X86_EFLAGS_IF):
            lg.kill_guest("Re-enabling interrupts")
            lg.step = None
            return
        lg.halted = False
    lo, hi = lg.idt[abi.FIRST_EXTERNAL_VECTOR + irq]
    if idt_present(hi):
        lg.irqs_pending &= ~(1 << irq)
        set_guest_interrupt(lg, lo, hi, False)
    write_timestamp(lg)
    lg.step = None


def write_timestamp(lg):
    now = time.time_ns()
    lg.lgwrite(lg.data_field("time"), (now // 1_000_000_000 & 0xFFFFFFFF).to_bytes(4, "little")
               + (now % 1_000_000_000).to_bytes(4, "little"))


# H:460 The clock event: a one-shot timer in nanoseconds.  When it expires IRQ 0 becomes pending; the
# Kicker's POSIX timer has already kicked the vCPU out of the Guest (or out of its HALT sleep) so the
# run loop gets here promptly.  2.6.23 used an absolute CLOCK_REALTIME hrtimer; the monotonic clock
# measures the same delta without caring if someone sets the date meanwhile.
# :*
def check_timer(lg):
    if lg.timer_deadline is not None and time.monotonic_ns() >= lg.timer_deadline:
        lg.timer_deadline = None
        lg.irqs_pending |= 1


# H:470 HALT: the Guest has nothing to do until an interrupt.  The vCPU thread sleeps — really
# sleeps, in sigtimedwait(), burning no CPU — until a kick (the timer, a break request, a DMA from
# another Guest) or the timer's deadline.  Back in the run loop, maybe_do_interrupt() delivers and
# turns the Guest's interrupts on, the "sti; hlt" that HALT means.
# :*
def halt_wait(lg):
    """Sleep while halted until an interrupt can be delivered; 0 to go round the loop again."""
    while lg.halted:
        if lg.dead is not None:
            return -errno.ENOENT
        if lg.break_out:
            return -errno.EAGAIN
        check_timer(lg)
        lg.collect_remote()
        blocked = lg.peek_u32(lg.data_field("blocked_interrupts")) or 0
        if lg.irqs_pending & ~blocked:
            return 0
        t0 = time.perf_counter_ns()
        r = lg.kicker.sleep(lg.timer_deadline)
        if lg.stats is not None:
            lg.stats.slept(time.perf_counter_ns() - t0)
        if r == -errno.EINTR:
            return -errno.EINTR
    return 0
