"""The kvm-pvm assists (lguest_kvm/assist.py): `int n`, `int3`, `iret` and far transfers, seen by
real Guests.

Every Guest here checks what the CPU would have done on a 2.6.23 Host: the trap, its error code, the
EIP it points at, the frame and the registers.  On hardware KVM the CPU does it all and the same
tests pass without an assist; on kvm-pvm they also check that the assists really ran.  The Guests
print "L name address" for the labels they care about and one line of "key=value" per event, and
the tests compare those with what the x86 rules say.

The tests at the end drive the far-transfer decoder directly, without KVM: kvm-pvm's emulator runs
ordinary `ljmp`, `lcall` and `lret` itself, so a Guest can only reach a few of its paths.
"""
import mmap
import struct
from types import SimpleNamespace

import pytest

import guestrun
from lguest_kvm import abi, assist, segments
from lguest_kvm.switcher import HOST_SLOT_SIZE, Frame, Switcher

DECIMAL_KEYS = {"vec", "trap", "ok", "at_iret", "at_np", "at_sys"}


def run(*sources, **kw):
    """Boot and run a Guest from tests/guests/ to its death: (death, text, facts).  The facts are
    read from the Host's Guest before the device is closed, since close() lets go of it."""
    g = guestrun.Booted(guestrun.build(*sources), **kw)
    try:
        why = g.run()
        lg = g.lg.guest
        facts = SimpleNamespace(kind=g.lg.kind, assists=lg.assists, exits=dict(lg.exits))
    finally:
        g.close()
    return why, g.text, facts


def labels(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("L "):
            name, value = line[2:].rsplit(None, 1)
            out[name] = int(value, 16)
    return out


def records(text, tag):
    """The key=value lines starting with `tag`, as dicts of ints."""
    out = []
    for line in text.splitlines():
        if not line.startswith(tag + " "):
            continue
        rec = {}
        for word in line.split()[1:]:
            if "=" in word:
                k, v = word.split("=", 1)
                rec[k] = int(v, 10 if k in DECIMAL_KEYS else 16)
            else:
                rec["name"] = word
        out.append(rec)
    return out


def assisted(facts):
    """On kvm-pvm the instructions under test must have gone through the assists."""
    if facts.kind == "kvm-pvm":
        assert facts.assists > 0


# --- int n and int3 at privilege level 1 --------------------------------------------------------

@pytest.mark.kvm
def test_int_n_at_cpl1_is_gp_with_vector_error_code():
    why, text, facts = run("as_int.c", "as_int.S")
    assert why == "CRASH: Power down", text
    assert "vector 0x30 delivered" not in text
    at = labels(text)
    traps = records(text, "T")
    want = [("at_int30", 0x30 * 8 + 2), ("at_int80", 0x80 * 8 + 2), ("at_int3", 0x1A),
            ("at_int3cd", 0x1A)]
    assert [(t["vec"], t["err"], t["eip"]) for t in traps[:4]] == \
        [(13, err, at[name]) for name, err in want]
    esp_before = labels(text)["ints_esp"]
    for t in traps[:4]:
        assert t["cs"] == abi.GUEST_CS
        # The registers at the trap are the Guest's, and the frame sits on its own stack.
        assert (t["eax"], t["ebx"], t["ecx"], t["edx"], t["esi"], t["edi"], t["ebp"]) == \
            (0xA1A1A1A1, 0xB2B2B2B2, 0xC3C3C3C3, 0xD4D4D4D4, 0x5E5E5E5E, 0xD1D1D1D1, 0xBBBBBBBB)
        assert t["frame_end"] == esp_before
    assisted(facts)
    if facts.kind == "kvm-pvm":
        assert facts.exits.get(13, 0) >= 4


@pytest.mark.kvm
def test_into_and_icebp_at_cpl1():
    why, text, facts = run("as_int.c", "as_int.S")
    assert why == "CRASH: Power down", text
    at = labels(text)
    # into with OF set is vector 4 through a DPL 0 gate: #GP(0x22) on the instruction; with OF
    # clear it does nothing; icebp is a debug trap (vector 1, no error code) after the instruction.
    assert [(t["vec"], t["err"], t["eip"]) for t in records(text, "T")[4:]] == \
        [(13, 4 * 8 + 2, at["at_into"]), (1, 0, at["after_icebp"])]
    assert at["after_icebp"] == at["at_icebp"] + 1
    assert text.endswith("into done\n")


@pytest.mark.kvm
def test_hypercall_int_0x1f_goes_through_and_keeps_registers():
    why, text, facts = run("as_int.c", "as_int.S")
    assert why == "CRASH: Power down"
    # printk itself is SEND_DMA hypercalls: that the text arrived at all is the first check.
    (h,) = records(text, "H")
    assert h == {"eax": 0, "ebx": 0xB2B2B2B2, "ecx": 0xC3C3C3C3, "edx": 0xD4D4D4D4,
                 "esi": 0x5E5E5E5E, "edi": 0xD1D1D1D1, "ebp": 0xBBBBBBBB,
                 "esp": labels(text)["ints_esp"]}
    assert facts.exits.get(abi.LGUEST_TRAP_ENTRY, 0) > 0


# --- iret at privilege level 1 ------------------------------------------------------------------

@pytest.fixture(scope="module")
def iret_run():
    return run("as_iret.c", "as_iret.S")


@pytest.mark.kvm
def test_iret_same_privilege_flags(iret_run):
    why, text, facts = iret_run
    assert why == "CRASH: Power down", text
    (base,) = [r["base"] for r in records(text, "F") if "base" in r]
    assert base & 0x200 and not base & 0x3000        # the Guest runs with IF on, IOPL 0
    results = [(r["in"], r["out"], r["delta"]) for r in records(text, "F") if "in" in r]
    arith = 0x8D5                                     # CF PF AF ZF SF OF
    expect = [
        (0x0CD5 | base, 0x0CD5 | base),               # arithmetic flags and DF all taken
        (base, base),                                 # ... and all cleared
        (0x3000 | (base & ~0x200), base),             # IOPL 3, IF off: CPL 1 can change neither
        (0x0001 | base, 0x0001 | base),               # CF alone
        (0x00240040 | base, 0x00240040 | base),       # AC, ID and ZF
    ]
    assert [(i, o) for i, o, _ in results] == expect
    assert all(d == 0 for _, _, d in results)        # eip, cs and eflags popped, nothing else
    assert all(o & arith == i & arith for i, o, _ in results)
    assisted(facts)


@pytest.mark.kvm
def test_iret_code_segment_checks(iret_run):
    why, text, facts = iret_run
    got = {r["cs"]: (r["ok"], r["trap"], r["err"], r["at_iret"], r["cs_seen"])
           for r in records(text, "C")}
    assert got == {
        0x61: (1, 0, 0, 0, 0x61),
        0x00: (0, 13, 0x00, 1, 0),      # null selector
        0x69: (0, 13, 0x68, 1, 0),      # a data segment
        0x60: (0, 13, 0x60, 1, 0),      # RPL 0: a return to an inner ring
        0x63: (0, 13, 0x60, 1, 0),      # RPL 3 but DPL 1 non-conforming code
        0x65: (0, 13, 0x64, 1, 0),      # the LDT
        0x73: (0, 13, 0x70, 1, 0),      # an empty GDT entry
        0x101: (0, 13, 0x100, 1, 0),    # past the GDT
        0xA1: (1, 0, 0, 0, 0xA1),       # another flat code segment the Guest loaded
        0xA9: (0, 11, 0xA8, 1, 0),      # not present: #NP, not #GP
    }


@pytest.mark.kvm
def test_iret_pops_its_frame_through_the_stack_segment_base(iret_run):
    why, text, facts = iret_run
    # %ss based so that %esp 0x9000 is the top of a buffer in the linear map: the frame is at
    # ss.base + esp, and all three words were popped.
    assert records(text, "B") == [{"flags": 0x2C3, "esp": 0x9000}]


# --- iret, lret and traps across privilege levels -----------------------------------------------

@pytest.mark.kvm
def test_iret_to_user_mode_and_traps_back():
    why, text, facts = run("as_user.c", "as_user.S")
    assert why == "CRASH: Power down", text
    at = labels(text)
    traps = records(text, "T")
    expect = [("user_int80", 0x402), ("user_hcall", 0xFA), ("user_int3", 0x1A), ("user_cli", 0),
              ("user_ljmp_kernel", 0x60), ("user_lret_kernel", 0x60), ("user_iret_kernel", 0x60),
              ("user_done", 0x402)]
    assert [(t["vec"], t["eip"], t["err"]) for t in traps] == \
        [(13, at[name], err) for name, err in expect]
    for t in traps:
        # Every trap came from ring 3, onto the kernel stack SET_STACK named, with the user's stack
        # in the frame.
        assert (t["cs"], t["ss"]) == (0x73, 0x7B)
        assert t["frame_end"] == at["kstack_top"]
        # What user mode saw first: the iret left %ds null (the kernel's data segment is DPL 1),
        # and ran it with cs 0x73 and ss 0x7B; then it loaded its own %ds and wrote memory.
        assert (t["ebx"], t["ecx"], t["edx"]) == (0, 0x73, 0x7B)
        assert t["ds"] == 0x7B and t["flag"] == 0x1234
        assert not t["eflags"] & 0x3000                 # the frame's IOPL 3 was not taken
    first, last = traps[0], traps[-1]
    assert first["esp"] == at["ustack_top"] == first["esi"]
    assert first["eflags"] & 1                          # CF from the frame (and stc)
    # A ring 3 lret and iret left their words on the stack when they faulted.
    assert traps[5]["esp"] == at["ustack_top"] - 8
    assert traps[6]["esp"] == at["ustack_top"] - 12
    # Far jump and call within ring 3, then an iret within ring 3 with ZF|SF and not CF.
    assert "lcall esp=%x callee esp=%x ret=%x cs=73" % (
        at["ustack_top"], at["ustack_top"] - 8, at["user_after_lcall"]) in text
    assert last["esp"] == at["ustack_top"] and last["ecx"] == 0x73
    assert last["eflags"] & 0xC1 == 0xC0
    assisted(facts)


@pytest.mark.kvm
def test_lret_to_user_mode_and_iret_frames_the_user_may_not_read():
    why, text, facts = run("as_stack.c", "as_stack.S")
    assert why == "CRASH: Power down", text
    at = labels(text)
    pf_kernel, pf_hole, done = records(text, "T")
    # `lret $4` to ring 3: cs, ss and esp (past the 4 bytes on each stack) from the frame.
    assert (done["vec"], done["err"], done["eip"]) == (13, 0x402, at["user_done"])
    assert (done["ebx"], done["edx"], done["esi"]) == (0x73, 0x7B, at["ustack_top"])
    assert done["edi"] == 0                             # %ds was made null on the way out
    # An iret from user mode with its frame in a supervisor page is a protection #PF (P|U), not
    # an iret to the kernel code segment the frame names.
    assert (pf_kernel["vec"], pf_kernel["err"], pf_kernel["eip"], pf_kernel["cs"]) == \
        (14, 5, at["at_iret_kernel_page"], 0x73)
    assert pf_kernel["cr2"] == at["kernel_page_frame"]
    # With its frame in an unmapped page, a not-present #PF (U), not a #GP.
    assert (pf_hole["vec"], pf_hole["err"], pf_hole["eip"]) == (14, 4, at["at_iret_unmapped"])
    assert pf_hole["cr2"] == at["unmapped_frame"]
    assisted(facts)
    if facts.kind == "kvm-pvm":
        assert facts.exits.get(assist.TRAP_ASSISTED, 0) >= 1      # the lret


# --- far transfers at privilege level 1 ---------------------------------------------------------

@pytest.mark.kvm
def test_far_transfers_same_privilege():
    why, text, facts = run("as_far.c", "as_far.S")
    assert why == "CRASH: Power down", text
    at = labels(text)
    res = {r["name"]: r for r in records(text, "R")}
    for name in ("far_lret", "far_lret_imm", "far_ljmp", "far_ljmp_rpl0"):
        assert (res[name]["delta"], res[name]["cs"]) == (0, 0x61), name
    # lcall pushes the return address and cs (0x61, whatever RPL the selector had), and the
    # callee's lret pops both.
    assert {k: res["far_lcall"][k] for k in ("delta", "cs", "ret", "saved_cs", "depth")} == \
        {"delta": 0, "cs": 0x61, "ret": at["at_lcall_ret"], "saved_cs": 0x61, "depth": 8}
    assert {k: res["far_lcall_rpl0"][k] for k in ("delta", "cs", "ret", "saved_cs", "depth")} == \
        {"delta": 0, "cs": 0x61, "ret": at["at_lcall_rpl0_ret"], "saved_cs": 0x61, "depth": 8}
    assert res["far_bad"]["delta"] == 0
    assisted(facts)


@pytest.mark.kvm
def test_far_transfers_to_bad_segments_fault():
    why, text, facts = run("as_far.c", "as_far.S")
    at = labels(text)
    expect = [("bad_ljmp_data", 13, 0x68), ("bad_ljmp_user", 13, 0x70),
              ("bad_ljmp_user0", 13, 0x70), ("bad_ljmp_null", 13, 0),
              ("bad_lcall_data", 13, 0x68), ("bad_lcall_user", 13, 0x70),
              ("bad_ljmp_np", 11, 0xA0),
              ("bad_ljmp_sys", 13, 0xA8),        # a call gate, which the Host never lets be used
              ("bad_lret_rpl0", 13, 0x60)]
    assert [(t["eip"], t["vec"], t["err"]) for t in records(text, "T")] == \
        [(at[name], vec, err) for name, vec, err in expect]


# --- the far-transfer decoder on its own, without KVM -------------------------------------------

PAGE_OFFSET = 0xC0000000
STACK_PAGE, RO_PAGE = 0x40, 0x41


class FakeGuest:
    """Just what assist.far_transfer() looks at: the frame, the real GDT, Guest memory with 2-level
    page tables mapping the linear map, and the accessors.  Page RO_PAGE is read-only."""

    def __init__(self, cpl=1):
        self.hmem = mmap.mmap(-1, HOST_SLOT_SIZE)
        self.switcher = Switcher(self.hmem)
        self.frame = Frame()
        self.mem = memoryview(bytearray(0x100000))
        self.pfn_limit = 0x100
        struct.pack_into("<I", self.mem, 0x1000 + 4 * (PAGE_OFFSET >> 22), 0x2000 | 7)
        for pfn in range(0x100):
            flags = 5 if pfn == RO_PAGE else 7
            struct.pack_into("<I", self.mem, 0x2000 + 4 * pfn, pfn << 12 | flags)
        self.shadow = SimpleNamespace(current=SimpleNamespace(cr3=0x1000),
                                      guest_pa=lambda v: v - PAGE_OFFSET)
        self.needs_assists, self.assists = True, 0
        gdt = [(0, 0)] * abi.GDT_ENTRIES
        gdt[12], gdt[13] = (0xFFFF, 0x00CFBA00), (0xFFFF, 0x00CFB200)
        gdt[14], gdt[15] = (0xFFFF, 0x00CFFA00), (0xFFFF, 0x00CFF200)
        self.gdt = [segments.fixup_gdt_entry(*d) for d in gdt]
        self.switcher.load_guest_gdt(self.gdt)
        f = self.frame
        f.cs, f.ss = (0x61, 0x69) if cpl == 1 else (0x73, 0x7B)
        f.ds = f.es = f.ss
        f.eip, f.esp = PAGE_OFFSET + 0x1000, PAGE_OFFSET + (STACK_PAGE + 1) * 4096 - 16

    def address_ok(self, addr, length):
        return addr + length <= len(self.mem)

    def peek_u32(self, addr):
        return struct.unpack_from("<I", self.mem, addr)[0] if self.address_ok(addr, 4) else None

    def poke_u32(self, addr, value):
        struct.pack_into("<I", self.mem, addr, value)
        return True

    def word(self, vaddr):
        return struct.unpack_from("<I", self.mem, vaddr - PAGE_OFFSET)[0]

    def push(self, *words):
        for w in words:
            self.frame.esp -= 4
            struct.pack_into("<I", self.mem, self.frame.esp - PAGE_OFFSET, w)


def test_decoded_ljmp_takes_the_current_privilege_as_rpl():
    lg = FakeGuest()
    code = b"\xea" + struct.pack("<IH", 0xC0123456, 0x60)      # ljmp $0x60, $0xC0123456
    assert assist.far_transfer(lg, code) == assist.TRAP_ASSISTED
    assert (lg.frame.eip, lg.frame.cs) == (0xC0123456, 0x61)


def test_decoded_lcall_pushes_return_address_and_cs():
    lg = FakeGuest()
    esp, eip = lg.frame.esp, lg.frame.eip
    code = b"\x9a" + struct.pack("<IH", 0xC0123456, 0x61)
    assert assist.far_transfer(lg, code) == assist.TRAP_ASSISTED
    assert lg.frame.esp == esp - 8
    assert (lg.word(esp - 8), lg.word(esp - 4)) == (eip + 7, 0x61)
    assert (lg.frame.eip, lg.frame.cs) == (0xC0123456, 0x61)


def test_decoded_lcall_onto_a_read_only_stack_is_a_page_fault_and_writes_nothing():
    lg = FakeGuest()
    lg.frame.esp = esp = PAGE_OFFSET + RO_PAGE * 4096 + 4     # cs would go in the RO page,
    before = bytes(lg.mem[RO_PAGE * 4096 - 4:RO_PAGE * 4096 + 4])  # the return address below it
    code = b"\x9a" + struct.pack("<IH", 0xC0123456, 0x61)
    assert assist.far_transfer(lg, code) == 14
    assert (lg.frame.errcode, lg.frame.cr2) == (3, esp - 4)    # present, write, supervisor
    assert (lg.frame.esp, lg.frame.cs, lg.frame.eip) == (esp, 0x61, PAGE_OFFSET + 0x1000)
    assert bytes(lg.mem[RO_PAGE * 4096 - 4:RO_PAGE * 4096 + 4]) == before


@pytest.mark.parametrize("sel,trap,err", [
    (0x69, 13, 0x68), (0x73, 13, 0x70), (0x70, 13, 0x70), (0x00, 13, 0), (0x03, 13, 0),
    (0x64, 13, 0x64), (0x108, 13, 0x108)])
def test_decoded_ljmp_to_a_bad_segment(sel, trap, err):
    lg = FakeGuest()
    code = b"\xea" + struct.pack("<IH", 0xC0123456, sel)
    assert assist.far_transfer(lg, code) == trap
    assert lg.frame.errcode == err
    assert lg.frame.cs == 0x61


def test_decoded_lret_to_outer_ring_switches_stack_and_nulls_data_segments():
    lg = FakeGuest()
    lg.frame.fs = 0x7B                                           # a DPL 3 segment stays
    lg.push(0x7B, 0xC0055000, 0x11111111, 0x73, 0xC0012345)     # ss, esp, (imm), cs, eip
    code = b"\xca\x04\x00"                                       # lret $4
    assert assist.far_transfer(lg, code) == assist.TRAP_ASSISTED
    f = lg.frame
    assert (f.eip, f.cs, f.esp, f.ss) == (0xC0012345, 0x73, 0xC0055004, 0x7B)
    assert (f.ds, f.es, f.fs) == (0, 0, 0x7B)


def test_decoded_lret_from_user_mode_to_the_kernel_is_refused():
    lg = FakeGuest(cpl=3)
    lg.push(0x61, 0xC0012345)
    assert assist.far_transfer(lg, b"\xcb") == 13
    assert lg.frame.errcode == 0x60 and lg.frame.cs == 0x73
