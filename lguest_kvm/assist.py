# H:800 Assists, for kvm-pvm only.  On a host with hardware virtualization the CPU runs every Guest
# instruction itself.  kvm-pvm runs our Guest through KVM's instruction emulator, which refuses a few
# instructions a Guest kernel needs: a software `int n` (and `int3`) ends KVM_RUN with an emulation
# failure, or arrives as #UD from user mode; `iret` raises #GP(0); and the far transfers it cannot
# finish (an `lret` to an outer ring, a far jump through a call gate) fail like `int`.  Ordinary
# same-ring `ljmp`, `lcall` and `lret` it runs itself.  (Measured with the Guests of
# tests/test_assist.py; ../shared/probes/kvm_modes.py shows the rest, but reports every far transfer
# as refused only because its probe code is not linked at the address it runs at.)  So the Host
# decodes the instruction at EIP and does what the CPU would have done, with its privilege checks,
# on the register frame.  Everything else then goes down the ordinary trap path, so the rest of the
# Host cannot tell an assisted trap from a real one.  On hardware KVM none of this ever runs.
# :*
import ctypes
import struct

from . import abi
from .kvm import (KVM_INTERNAL_ERROR_EMULATION, KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS, kvm_regs,
                  kvm_run, kvm_sregs)
from .switcher import FRAME_OFFSET

TRAP_IN_SWITCHER = 256

TRAP_ASSISTED = 0x1FF      # "done already": the trap path just resumes the Guest


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


def fetch_insn(lg, eip):
    """The bytes at EIP, read through the shadow entry the CPU itself just fetched them with."""
    pte = lg.shadow.shadow_pte(eip)
    off = eip & 0xFFF
    if pte & 1 and off <= 4096 - 16:
        gpa = (pte & 0xFFFFF000) | off
        if gpa + 16 <= len(lg.mem):
            return bytes(lg.mem[gpa:gpa + 16])
    return read_code(lg, eip)


# H:805 Saving a vCPU that stopped in the Guest without passing through the Switcher: the Guest's
# registers go into the frame, just as the Switcher's stubs would have put them, and the trap number
# says what happened.  Returns the kvm_regs words, or None when the vCPU was inside the Switcher
# itself (CPL 0), whose own work on the frame must then be left to finish.
# :*
def save_vcpu(lg, sync, trapnum=TRAP_IN_SWITCHER):
    # One unpack of each structure and one pack into the frame: this runs on every refused
    # instruction, and a ctypes attribute access per register would cost more than the rest.
    if sync:                                # no ioctl: the registers came with the exit
        buf, regs_at, sregs_at = lg.vm.run_map, _RUN_REGS, _RUN_SREGS
    else:
        buf = bytes(lg.vm.get_regs()) + bytes(lg.vm.get_sregs())
        regs_at, sregs_at = 0, ctypes.sizeof(kvm_regs)
    r = _KVM_REGS.unpack_from(buf, regs_at)
    sel = _SELECTORS.unpack_from(buf, sregs_at)
    cr2 = _U64.unpack_from(buf, sregs_at + kvm_sregs.cr2.offset)[0]
    if sel[0] & 3 == 0:
        return None
    rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp = r[:8]
    cs, ds, es, fs, gs, ss = sel
    _FRAME.pack_into(lg.hmem, FRAME_OFFSET, 0, 0, cr2, gs, fs, es, ds,
                     rdi & _M, rsi & _M, rbp & _M, rbx & _M, rdx & _M, rcx & _M, rax & _M,
                     trapnum, 0, r[16] & _M, cs, r[17] & _M, rsp & _M, ss)
    lg.kvm_regs = r
    lg.captured_segs = (cs, ss, ds, es, fs, gs)
    lg.captured_gdt = lg.switcher.gdt_generation
    lg.in_switcher = False
    return r


def save_stopped_vcpu(lg, trapnum):
    """A vCPU a signal stopped: its registers come by ioctl, not with the exit."""
    return save_vcpu(lg, False, trapnum)


# H:810 An emulation failure leaves the vCPU sitting on the refused instruction with the Guest's own
# registers; nothing has been saved in the frame.  So we copy the registers there ourselves, decode the
# instruction, and write down the trap the hardware would have raised.  Then the run loop carries on
# as if the Switcher had just exited.
# :*
def capture(lg):
    if not lg.needs_assists or _U32.unpack_from(lg.vm.run_map, _SUBERROR)[0] != KVM_INTERNAL_ERROR_EMULATION:
        return False
    r = save_vcpu(lg, lg.vm.sync_regs)
    if r is None:
        return False                        # inside the Switcher: nothing to assist
    lg.assists += 1
    f = lg.frame
    code = fetch_insn(lg, r[16] & _M)
    trap = decode_trap(lg, code)
    if trap is None:
        lg.kill_guest("KVM cannot run the instruction at %#x (%s) and the Host does not assist it"
                      % (f.eip, code[:8].hex(" ")))
        return True
    f.trapnum = trap
    lg.exits[trap] = lg.exits.get(trap, 0) + 1
    return True


_M = 0xFFFFFFFF
_KVM_REGS = struct.Struct("<18Q")                       # rax rbx rcx rdx rsi rdi rsp rbp r8-15 rip rflags
_SELECTORS = struct.Struct("<" + "12xH10x" * 6)         # cs ds es fs gs ss of kvm_sregs
_FRAME = struct.Struct("<21Q")                          # switcher.Frame
_GPR8 = struct.Struct("<8Q")
_RIP_FLAGS = struct.Struct("<2Q")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_SUBERROR = kvm_run.u.offset                            # kvm_run.internal.suberror
_RUN_REGS = kvm_run.s.offset                            # kvm_run.s.regs.regs
_RUN_SREGS = kvm_run.s.offset + ctypes.sizeof(kvm_regs)  # kvm_run.s.regs.sregs


def cpl(lg):
    return lg.frame.cs & 3


# H:820 `int n`.  The Switcher's IDT gives only the hypercall gate (0x1F) DPL 1; every other gate is
# DPL 0, so from the Guest `int n` is a #GP with error code n*8+2 (and `int3` is n = 3, `into` with
# the overflow flag set n = 4; with it clear, `into` does nothing).  A hypercall from the Guest
# kernel goes through, with EIP past the instruction, as the gate would have left it.  `icebp` is
# the one software interrupt no gate's privilege stops: a debug trap, after the instruction.
# :*
_EFLAGS_OF = 0x800


def decode_int(lg, code):
    f = lg.frame
    if code[:1] == b"\xcd" and len(code) >= 2:
        vector, length = code[1], 2
    elif code[:1] == b"\xcc":
        vector, length = 3, 1
    elif code[:1] == b"\xce":
        if not f.eflags & _EFLAGS_OF:
            f.eip = (f.eip + 1) & 0xFFFFFFFF
            return TRAP_ASSISTED
        vector, length = 4, 1
    elif code[:1] == b"\xf1":
        f.eip = (f.eip + 1) & 0xFFFFFFFF
        return 1
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


# H:830 The checks the assists share, in the order the CPU makes them (Intel SDM, IRET, RET and
# JMP): a null selector is #GP(0); a selector past the GDT, in the LDT (which a Guest cannot have),
# or naming the wrong kind of descriptor or privilege is #GP(selector); a good descriptor that is
# not present is #NP(selector), or #SS(selector) for a stack.  They look at the real GDT, after the
# Host's fixups (H:610), since that is what the CPU would have looked at.  A failure is raised as a
# _Fault, and the assist turns it into the trap the Guest would have taken.
# :*
_GP, _NP, _SS, _PF = 13, 11, 12, 14
_S, _CODE, _CONFORMING, _WRITABLE, _PRESENT = 0x1000, 0x800, 0x400, 0x200, 0x8000
_CALL_GATE = 0xC


class _Fault(Exception):
    """The fault an assisted instruction raises: its trap number, error code and (#PF) address."""

    def __init__(self, trap, errcode, cr2=None):
        super().__init__(trap, errcode, cr2)
        self.trap, self.errcode, self.cr2 = trap, errcode, cr2


def _dpl(b):
    return (b >> 13) & 3


def _descriptor(lg, sel):
    """The high word of sel's descriptor; #GP for a selector that names none."""
    if sel & 0xFFFC == 0:
        raise _Fault(_GP, 0)
    desc = lg.switcher.guest_descriptor(sel)
    if desc is None:
        raise _Fault(_GP, sel & 0xFFFC)
    return desc[1]


def _check_return_cs(lg, sel):
    """iret and lret: the code segment returned to, at the privilege of its RPL (no inner ring)."""
    b = _descriptor(lg, sel)
    rpl = sel & 3
    if b & (_S | _CODE) != _S | _CODE or rpl < cpl(lg):
        raise _Fault(_GP, sel & 0xFFFC)
    if _dpl(b) > rpl if b & _CONFORMING else _dpl(b) != rpl:
        raise _Fault(_GP, sel & 0xFFFC)
    if not b & _PRESENT:
        raise _Fault(_NP, sel & 0xFFFC)


def _check_jump_cs(lg, sel):
    """ljmp and lcall: the code segment jumped to, at the same privilege.  Returns the new cs, which
    takes the current privilege as its RPL.  A call gate is the only system descriptor a far jump
    may name, and the Host has marked them all not present (H:610); its Accessed fixup also turns a
    call gate's type into a reserved one, so in practice every system descriptor is a #GP."""
    b = _descriptor(lg, sel)
    here, rpl = cpl(lg), sel & 3
    if not b & _S:
        if (b >> 8) & 0xF == _CALL_GATE and _dpl(b) >= max(here, rpl):
            raise _Fault(_NP, sel & 0xFFFC)
        raise _Fault(_GP, sel & 0xFFFC)
    if not b & _CODE:
        raise _Fault(_GP, sel & 0xFFFC)
    if _dpl(b) > here if b & _CONFORMING else rpl > here or _dpl(b) != here:
        raise _Fault(_GP, sel & 0xFFFC)
    if not b & _PRESENT:
        raise _Fault(_NP, sel & 0xFFFC)
    return (sel & 0xFFFC) | here


def _check_outer_ss(lg, sel, rpl):
    """The stack segment of a return to the outer ring rpl: writable data of exactly that ring."""
    b = _descriptor(lg, sel)
    if sel & 3 != rpl or b & (_S | _CODE | _WRITABLE) != _S | _WRITABLE or _dpl(b) != rpl:
        raise _Fault(_GP, sel & 0xFFFC)
    if not b & _PRESENT:
        raise _Fault(_SS, sel & 0xFFFC)


def _to_outer_ring(lg, rpl, esp, ss):
    """The stack switch of a return to an outer ring, and the data segment registers the new ring
    may not use (data or non-conforming code of a more privileged ring) become null."""
    _check_outer_ss(lg, ss, rpl)
    f = lg.frame
    f.esp, f.ss = esp & 0xFFFFFFFF, ss
    for name in ("ds", "es", "fs", "gs"):
        desc = lg.switcher.guest_descriptor(getattr(f, name) & 0xFFFF)
        conforming_code = desc is not None and desc[1] & (_CODE | _CONFORMING) == _CODE | _CONFORMING
        if desc is not None and _dpl(desc[1]) < rpl and not conforming_code:
            setattr(f, name, 0)


# H:835 Stack accesses.  The frames an assist pops and the return address `lcall` pushes are at the
# stack segment's base plus esp (a 32-bit stack segment, as every Guest's is), and they go through
# the Guest's page tables with the checks the CPU would make at the current privilege: present, the
# User bit from user mode and the RW bit for a write (CR0.WP is on, so for the Guest kernel too).
# Like demand paging (H:320), only the Guest's PTE flags count.  A failure is the page fault the CPU
# would raise, which then goes down the ordinary #PF path; and the Accessed and Dirty bits are set
# as the CPU would have set them.
# :*
_PTE_P, _PTE_RW, _PTE_US, _PTE_A, _PTE_D = 0x1, 0x2, 0x4, 0x20, 0x40


def _translate(lg, vaddr, write):
    """The gpa of one byte of Guest virtual memory, for an access by the current privilege."""
    vaddr &= 0xFFFFFFFF
    err = (2 if write else 0) | (4 if cpl(lg) == 3 else 0)
    gpgd = lg.peek_u32(lg.shadow.current.cr3 + 4 * (vaddr >> 22))
    if gpgd is None or not gpgd & _PTE_P or vaddr >> 22 >= abi.SWITCHER_PGD_INDEX:
        # (Demand paging kills a Guest that reaches for the Switcher's 4 MB, as 2.6.23 did.)
        raise _Fault(_PF, err, vaddr)
    gpte_at = (gpgd & 0xFFFFF000) + 4 * ((vaddr >> 12) & 1023)
    gpte = lg.peek_u32(gpte_at)
    if gpte is None or not gpte & _PTE_P:
        raise _Fault(_PF, err, vaddr)
    if (write and not gpte & _PTE_RW) or (err & 4 and not gpte & _PTE_US):
        raise _Fault(_PF, err | 1, vaddr)
    pa = (gpte & 0xFFFFF000) | (vaddr & 0xFFF)
    if not lg.address_ok(pa, 1):
        raise _Fault(_PF, err | 1, vaddr)
    lg.poke_u32(gpte_at, gpte | _PTE_A | (_PTE_D if write else 0))
    return pa


def _pieces(lg, vaddr, length, write):
    """(gpa, length) runs covering [vaddr, vaddr + length), each within one page."""
    out, done = [], 0
    while done < length:
        v = (vaddr + done) & 0xFFFFFFFF
        n = min(length - done, 4096 - (v & 0xFFF))
        out.append((_translate(lg, v, write), n))
        done += n
    return out


def _ss_base(lg):
    """The current stack segment's base (a Guest's is normally 0): the stack is at ss.base + esp."""
    desc = lg.switcher.guest_descriptor(lg.frame.ss & 0xFFFF)
    if desc is None:
        return 0
    a, b = desc
    return (a >> 16) | (b & 0xFF) << 16 | (b & 0xFF000000)


def _stack_read(lg, esp, count):
    """count words from the current stack at esp."""
    runs = _pieces(lg, _ss_base(lg) + esp, 4 * count, False)
    return struct.unpack("<%dI" % count, b"".join(bytes(lg.mem[pa:pa + n]) for pa, n in runs))


def _stack_write(lg, esp, words):
    """Push words (lowest address first) as the CPU does: the last word first, every page checked
    before anything is written."""
    esp += _ss_base(lg)
    pieces = [_pieces(lg, esp + 4 * i, 4, True) for i in reversed(range(len(words)))]
    for word, runs in zip(reversed(words), pieces):
        data = struct.pack("<I", word & 0xFFFFFFFF)
        for pa, n in runs:
            lg.mem[pa:pa + n], data = data[:n], data[n:]


# H:840 Far transfers: `lret`, `ljmp ptr16:32` and `lcall ptr16:32`.  kvm-pvm's emulator runs the
# ordinary ones itself; what reaches us is what it refuses: a far jump or call naming a call gate,
# and an `lret` to an outer ring.  We do those as the CPU does: a jump or call stays in the current
# ring, a far return may go outward, popping the outer ring's esp and ss too.
# :*
def far_transfer(lg, code):
    f = lg.frame
    op = code[:1]
    try:
        if op in (b"\xcb", b"\xca"):                       # lret / lret $imm16
            eip, sel = _stack_read(lg, f.esp, 2)
            sel &= 0xFFFF
            _check_return_cs(lg, sel)
            extra = struct.unpack_from("<H", code, 1)[0] if op == b"\xca" and len(code) >= 3 else 0
            esp = f.esp + 8 + extra
            if sel & 3 > cpl(lg):
                outer_esp, outer_ss = _stack_read(lg, esp, 2)
                _to_outer_ring(lg, sel & 3, outer_esp + extra, outer_ss & 0xFFFF)
            else:
                f.esp = esp & 0xFFFFFFFF
            f.eip, f.cs = eip, sel
            return TRAP_ASSISTED
        if op in (b"\xea", b"\x9a") and len(code) >= 7:    # ljmp / lcall ptr16:32
            eip, sel = struct.unpack_from("<IH", code, 1)
            cs = _check_jump_cs(lg, sel)
            if op == b"\x9a":
                esp = (f.esp - 8) & 0xFFFFFFFF
                _stack_write(lg, esp, (f.eip + 7, f.cs & 0xFFFF))
                f.esp = esp
            f.eip, f.cs = eip, cs
            return TRAP_ASSISTED
    except _Fault as e:
        return _fault_trap(lg, e)
    return None


def _fault_trap(lg, e):
    """Set up the frame for the fault e; its trap number."""
    lg.frame.errcode = e.errcode
    if e.cr2 is not None:
        lg.frame.cr2 = e.cr2
    return e.trap


# H:850 `iret`.  kvm-pvm's emulator raises #GP(0) for a 32-bit iret, so a #GP with error code 0 on an
# `iret` byte is done here: pop eip, cs and eflags, and when returning to an outer ring (the Guest
# kernel going back to user mode) esp and ss as well, with the checks protected mode makes.  The
# real interrupt flag stays on and IOPL stays 0, whatever the frame says: the Guest's interrupt flag
# is the virtual one in lguest_data.  With NT set the CPU would attempt a task return, which long
# mode refuses with #GP(0): we leave that #GP alone.
# :*
_EFLAGS_KEEP = 0x00254DD5   # CF PF AF ZF SF TF DF OF NT RF AC ID: what an iret at CPL > 0 may change
_EFLAGS_NT = 0x4000


def fixup_gp(lg):
    """A #GP that kvm-pvm raised for a good `iret`: emulate it.  True when handled; False leaves the
    caller a #GP to deliver, with the error code the CPU would have given."""
    f = lg.frame
    if not lg.needs_assists or f.errcode != 0 or f.eflags & _EFLAGS_NT:
        return False
    code = read_code(lg, f.eip, 2)
    if code[:1] != b"\xcf":
        return False
    lg.assists += 1
    try:
        eip, sel, eflags = _stack_read(lg, f.esp, 3)
        sel &= 0xFFFF
        _check_return_cs(lg, sel)
        new_flags = (eflags & _EFLAGS_KEEP & ~0x100) | (f.eflags & ~_EFLAGS_KEEP) | abi.X86_EFLAGS_IF
        if sel & 3 > cpl(lg):
            outer_esp, outer_ss = _stack_read(lg, f.esp + 12, 2)
            _to_outer_ring(lg, sel & 3, outer_esp, outer_ss & 0xFFFF)
        else:
            f.esp = (f.esp + 12) & 0xFFFFFFFF
    except _Fault as e:
        trap = _fault_trap(lg, e)
        if trap == _GP:
            return False
        from . import interrupts_and_traps          # (which imports us)
        f.trapnum = trap
        interrupts_and_traps.handle_trap(lg, trap)
        return True
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
# loads everything from the frame just as after any other trap.  That includes a hypercall that
# changed the GDT (LOAD_GDT, LOAD_TLS): 2.6.23's Switcher reloaded the segment registers on every
# entry, so a Guest whose %gs holds a TLS entry sees the new base at once, and so must ours.  kvm-pvm
# emulates every access and walks the page tables afresh, so no TLB flush is needed on the short path.
# :*
def resume(lg):
    (_, _, _, gs, fs, es, ds, edi, esi, ebp, ebx, edx, ecx, eax, _, _, eip, cs, eflags, esp,
     ss) = _FRAME.unpack_from(lg.hmem, FRAME_OFFSET)
    sync = lg.vm.sync_regs
    new_root = lg.shadow.current.pml4 != lg.loaded_cr3
    if ((cs, ss, ds, es, fs, gs) == lg.captured_segs and (sync or not new_root)
            and lg.ts == lg.loaded_ts and lg.switcher.gdt_generation == lg.captured_gdt
            and not (lg.shadow.changed and not lg.needs_assists)):
        if sync:
            run_map = lg.vm.run_map
            _GPR8.pack_into(run_map, _RUN_REGS, eax & _M, ebx & _M, ecx & _M, edx & _M,
                            esi & _M, edi & _M, esp & _M, ebp & _M)
            _RIP_FLAGS.pack_into(run_map, _RUN_REGS + kvm_regs.rip.offset, eip & _M, eflags & _M)
            dirty = KVM_SYNC_X86_REGS
            if new_root:
                # H:865 A new shadow root (NEW_PGTABLE, or a flush that rebuilt it) while the Guest
                # stays where it is: the special registers KVM gave us with the exit go back with
                # only cr3 changed, so one KVM_RUN does what the Switcher's whole resume path and
                # four register ioctls did.
                # :*
                lg.loaded_cr3 = lg.shadow.current.pml4
                _U64.pack_into(run_map, _RUN_SREGS + kvm_sregs.cr3.offset, lg.loaded_cr3)
                dirty |= KVM_SYNC_X86_SREGS
            lg.vm.run.kvm_dirty_regs = dirty
        else:
            r = lg.kvm_regs
            lg.vm.set_regs(kvm_regs(eax & _M, ebx & _M, ecx & _M, edx & _M, esi & _M, edi & _M,
                                    esp & _M, ebp & _M, *r[8:16], eip & _M, eflags & _M))
        lg.shadow.changed = False
        return
    lg.enter_via_switcher()
