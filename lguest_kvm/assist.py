# H:800 Assists, for kvm-pvm only.  On a host with hardware virtualization the CPU runs every Guest
# instruction itself.  kvm-pvm runs our Guest through KVM's instruction emulator, which refuses a few
# instructions a Guest kernel needs: a software `int n` (and `int3`) ends KVM_RUN with an emulation
# failure, or arrives as #UD from user mode; `iret` raises #GP(0); far `lret`/`ljmp`/`lcall` fail
# like `int`.  (python3 ../shared/probes/kvm_modes.py shows these facts on any machine.)  So the Host
# decodes the instruction at EIP and does what the CPU would have done, with its privilege checks,
# on the register frame.  Everything else then goes down the ordinary trap path, so the rest of the
# Host cannot tell an assisted trap from a real one.  On hardware KVM none of this ever runs.
# :*
import struct

from . import abi
from .kvm import KVM_INTERNAL_ERROR_EMULATION

TRAP_ASSISTED = 0x1FF      # "done already": the trap path just resumes the Guest
_SEGS = ("cs", "ss", "ds", "es", "fs", "gs")
_GPRS = ("eax", "ecx", "edx", "ebx", "esi", "edi", "ebp")


def _kvm_reg(name):
    return "r" + name[1:]


def read_code(lg, linear, length=16):
    """Up to `length` bytes of Guest memory at a virtual address, through the Guest's page tables."""
    out = b""
    while len(out) < length:
        pa = lg.shadow.guest_pa((linear + len(out)) & 0xFFFFFFFF)
        if pa is None:
            break
        n = min(length - len(out), 4096 - (pa & 0xFFF))
        if not lg.address_ok(pa, n):
            break
        out += bytes(lg.mem[pa:pa + n])
    return out


# H:810 An emulation failure leaves the vCPU sitting on the refused instruction with the Guest's own
# registers; nothing has been saved in the frame.  So we copy the registers there ourselves, decode the
# instruction, and write down the trap the hardware would have raised.  Then the run loop carries on
# as if the Switcher had just exited.
# :*
def capture(lg):
    run = lg.vm.run
    if not lg.needs_assists or run.u.internal.suberror != KVM_INTERNAL_ERROR_EMULATION:
        return False
    regs = lg.vm.get_regs()
    sregs = lg.vm.get_sregs()
    if sregs.cs.selector & 3 == 0:
        return False                        # inside the Switcher: nothing to assist
    f = lg.frame
    for name in _GPRS:
        setattr(f, name, getattr(regs, _kvm_reg(name)) & 0xFFFFFFFF)
    f.eip, f.esp, f.eflags = regs.rip & 0xFFFFFFFF, regs.rsp & 0xFFFFFFFF, regs.rflags & 0xFFFFFFFF
    for name in _SEGS:
        setattr(f, name, getattr(sregs, name).selector)
    f.cr2, f.errcode, f.cr3_req, f.cr0_req = sregs.cr2, 0, 0, 0
    lg.kvm_regs = regs
    lg.captured_segs = tuple(getattr(sregs, n).selector for n in _SEGS)
    lg.in_switcher = False
    lg.assists += 1
    code = read_code(lg, f.eip)
    trap = decode_trap(lg, code)
    if trap is None:
        lg.kill_guest("KVM cannot run the instruction at %#x (%s) and the Host does not assist it"
                      % (f.eip, code[:8].hex(" ")))
        return True
    f.trapnum = trap
    lg.exits[trap] = lg.exits.get(trap, 0) + 1
    return True


def cpl(lg):
    return lg.frame.cs & 3


# H:820 `int n`.  The Switcher's IDT gives only the hypercall gate (0x1F) DPL 1; every other gate is
# DPL 0, so from the Guest `int n` is a #GP with error code n*8+2 (and `int3` is n = 3).  A hypercall
# from the Guest kernel goes through, with EIP past the instruction, as the gate would have left it.
# :*
def decode_int(lg, code):
    f = lg.frame
    if code[:1] == b"\xcd" and len(code) >= 2:
        vector, length = code[1], 2
    elif code[:1] == b"\xcc":
        vector, length = 3, 1
    else:
        return None
    if vector == abi.LGUEST_TRAP_ENTRY and cpl(lg) <= abi.GUEST_PL:
        f.eip = (f.eip + length) & 0xFFFFFFFF
        return abi.LGUEST_TRAP_ENTRY
    f.errcode = vector * 8 + 2
    return 13


def decode_trap(lg, code):
    trap = decode_int(lg, code)
    if trap is None:
        trap = far_transfer(lg, code)
    return trap


# H:830 Segment checks the assists share: a selector must name a present GDT entry of the right kind
# (code or data) whose privilege fits.  A failure is the #GP the CPU would raise, with the selector
# as its error code.
# :*
def code_segment_ok(lg, sel, rpl):
    desc = lg.switcher.guest_descriptor(sel)
    if desc is None:
        return False
    b = desc[1]
    is_code = b & 0x1800 == 0x1800
    conforming = b & 0x400
    dpl = (b >> 13) & 3
    return bool(is_code and b & 0x8000 and (dpl <= rpl if conforming else dpl == rpl))


def data_segment_ok(lg, sel, rpl):
    desc = lg.switcher.guest_descriptor(sel)
    if desc is None:
        return False
    b = desc[1]
    writable_data = b & 0x1A00 == 0x1200
    return bool(writable_data and b & 0x8000 and (b >> 13) & 3 == rpl)


def _gp(lg, sel):
    lg.frame.errcode = sel & 0xFFFC
    return 13


def _stack_read(lg, esp, count):
    data = read_code(lg, esp, 4 * count)
    if len(data) != 4 * count:
        return None
    return struct.unpack("<%dI" % count, data)


def _stack_write(lg, esp, words):
    for i, w in enumerate(words):
        pa = lg.shadow.guest_pa((esp + 4 * i) & 0xFFFFFFFF)
        if pa is None or not lg.address_ok(pa, 4):
            return False
        struct.pack_into("<I", lg.mem, pa, w & 0xFFFFFFFF)
    return True


# H:840 Far transfers at the same privilege: `lret`, `ljmp ptr16:32` and `lcall ptr16:32`.  The
# Guest uses them to reload cs; the new code segment must have the same privilege as the current one.
# Returning to an outer ring is `iret`'s business and is not assisted here.
# :*
def far_transfer(lg, code):
    f = lg.frame
    op = code[:1]
    if op in (b"\xcb", b"\xca"):                       # lret / lret $imm16
        words = _stack_read(lg, f.esp, 2)
        if words is None:
            return None
        eip, sel = words[0], words[1] & 0xFFFF
        if sel & 3 != cpl(lg) or not code_segment_ok(lg, sel, cpl(lg)):
            return _gp(lg, sel)
        extra = struct.unpack_from("<H", code, 1)[0] if op == b"\xca" and len(code) >= 3 else 0
        f.esp = (f.esp + 8 + extra) & 0xFFFFFFFF
        f.eip, f.cs = eip, sel
        return TRAP_ASSISTED
    if op in (b"\xea", b"\x9a") and len(code) >= 7:    # ljmp / lcall ptr16:32
        eip, sel = struct.unpack_from("<IH", code, 1)
        if sel & 3 != cpl(lg) or not code_segment_ok(lg, sel, cpl(lg)):
            return _gp(lg, sel)
        if op == b"\x9a":
            esp = (f.esp - 8) & 0xFFFFFFFF
            if not _stack_write(lg, esp, (f.eip + 7, f.cs)):
                return None
            f.esp = esp
        f.eip, f.cs = eip, sel
        return TRAP_ASSISTED
    return None


# H:850 `iret`.  kvm-pvm's emulator raises #GP(0) for a 32-bit iret, so a #GP with error code 0 on an
# `iret` byte is done here: pop eip, cs and eflags, and when returning to an outer ring (the Guest
# kernel going back to user mode) esp and ss as well, with the checks protected mode makes.  The
# real interrupt flag stays on and IOPL stays 0, whatever the frame says: the Guest's interrupt flag
# is the virtual one in lguest_data.
# :*
_EFLAGS_KEEP = 0x00254DD5   # CF PF AF ZF SF TF DF OF NT AC ID: what an iret at CPL > 0 may change


def fixup_gp(lg):
    """A #GP that kvm-pvm raised for a good `iret`: emulate it.  True when handled."""
    f = lg.frame
    if not lg.needs_assists or f.errcode != 0:
        return False
    code = read_code(lg, f.eip, 2)
    if code[:1] != b"\xcf":
        return False
    lg.assists += 1
    here = cpl(lg)
    words = _stack_read(lg, f.esp, 3)
    if words is None:
        return False
    eip, sel, eflags = words[0], words[1] & 0xFFFF, words[2]
    rpl = sel & 3
    if rpl < here or not code_segment_ok(lg, sel, rpl):
        f.errcode = sel & 0xFFFC
        return False
    new_flags = (eflags & _EFLAGS_KEEP & ~0x100) | (f.eflags & ~_EFLAGS_KEEP) | abi.X86_EFLAGS_IF
    if rpl == here:
        f.esp = (f.esp + 12) & 0xFFFFFFFF
    else:
        outer = _stack_read(lg, f.esp + 12, 2)
        if outer is None:
            return False
        new_esp, new_ss = outer[0], outer[1] & 0xFFFF
        if new_ss & 3 != rpl or not data_segment_ok(lg, new_ss, rpl):
            f.errcode = new_ss & 0xFFFC
            return False
        f.esp, f.ss = new_esp, new_ss
        for name in ("ds", "es", "fs", "gs"):
            s = getattr(f, name) & 0xFFFF
            desc = lg.switcher.guest_descriptor(s)
            if desc is not None and (desc[1] >> 13) & 3 < rpl and desc[1] & 0x1C00 != 0x1C00:
                setattr(f, name, 0)
    f.eip, f.cs, f.eflags = eip, sel, new_flags
    return True


def fixup_ud(lg):
    """kvm-pvm reports a user-mode `int n` as #UD: turn it into the #GP hardware raises."""
    f = lg.frame
    if not lg.needs_assists:
        return None
    code = read_code(lg, f.eip, 2)
    trap = decode_int(lg, code)
    if trap is not None:
        lg.assists += 1
        f.trapnum = trap
    return trap


# H:860 Back into the Guest after an assist.  The vCPU is still in the Guest, on the instruction it
# refused.  If the Guest is to carry on at the same privilege with the same segments, KVM_SET_REGS
# with the frame's registers is all it takes.  Otherwise (a trap reflected to the Guest kernel from
# user mode, a switch of page tables) the vCPU is put back into the Switcher's resume path, which
# loads everything from the frame just as after any other trap.  kvm-pvm emulates every access and
# walks the page tables afresh, so no TLB flush is needed on the short path.
# :*
def resume(lg):
    f = lg.frame
    segs = tuple(getattr(f, n) for n in _SEGS)
    if segs == lg.captured_segs and lg.shadow.current.pml4 == lg.loaded_cr3 and lg.ts == lg.loaded_ts:
        regs = lg.kvm_regs
        for name in _GPRS:
            setattr(regs, _kvm_reg(name), getattr(f, name) & 0xFFFFFFFF)
        regs.rip, regs.rsp, regs.rflags = f.eip & 0xFFFFFFFF, f.esp & 0xFFFFFFFF, f.eflags & 0xFFFFFFFF
        lg.vm.set_regs(regs)
        lg.shadow.changed = False
        return
    lg.enter_via_switcher()
