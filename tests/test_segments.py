"""Segments (lguest_kvm/segments.py): LOAD_GDT and LOAD_TLS, their kills, and the fixups, checked in
the real GDT the vCPU uses and by Guests loading the segments they asked for."""
from types import SimpleNamespace

import pytest

import guestrun
from lguest_kvm import abi, direct, segments, switcher

DECIMAL_KEYS = {"vec", "at_np", "at_sys"}

KILL = r"""
#include "lguest.h"

static unsigned long table[33][2] __attribute__((unused));

int main(void)
{
	lguest_init();
	hcall(%s);
	printk("survived\n");
	return 0;
}
"""


def host_module(facts):
    return direct if facts.paging == "direct" else switcher


def check_host_entries(facts):
    """The Host's own GDT entries of the backend the Guest ran on."""
    real = facts.gdt
    if facts.paging == "direct":
        assert (real[10], real[11], real[16]) == (direct.HOST_CS_DESC, direct.HOST_DS_DESC,
                                                  direct.TSS_DESC)
        return
    assert real[10] == switcher.HOST_CS_DESC
    assert real[11] == switcher.HOST_DS_DESC
    tss = switcher.tss_descriptor()
    assert (real[16], real[17]) == ((tss[0], tss[1]), (tss[2], tss[3]))
    assert real[31] == (0, 0)


def run(*sources, **kw):
    """Boot and run a Guest to its death: (death, text, facts), the facts (the real GDT as (a, b)
    pairs, the Host's copy of the Guest's GDT) read before the device is closed."""
    g = guestrun.Booted(guestrun.build(*sources), **kw)
    try:
        why = g.run()
        lg = g.lg.guest
        real = lg.switcher.gdt
        facts = SimpleNamespace(kind=g.lg.kind, paging=lg.paging, gdt=[(real[2 * i], real[2 * i + 1])
                                                     for i in range(abi.GDT_ENTRIES)],
                                guest_gdt=list(lg.gdt), pfn_limit=g.pfn_limit)
    finally:
        g.close()
    return why, g.text, facts


def records(text, tag):
    out = []
    for line in text.splitlines():
        if line.startswith(tag + " "):
            rec = {}
            for word in line.split()[1:]:
                k, v = word.split("=", 1)
                rec[k] = int(v, 10 if k in DECIMAL_KEYS else 16)
            out.append(rec)
    return out


def dpl(desc):
    return (desc[1] >> 13) & 3


def base(desc):
    a, b = desc
    return (a >> 16) | (b & 0xFF) << 16 | (b & 0xFF000000)


def present(desc):
    return bool(desc[1] & 0x8000)


# --- kills --------------------------------------------------------------------------------------

@pytest.mark.kvm
@pytest.mark.parametrize("call,death", [
    ("LHCALL_LOAD_GDT, __pa(table), 33, 0", "too many gdt entries 33"),
    ("LHCALL_LOAD_GDT, __pa(table), 0xFFFFFFFF, 0", "too many gdt entries -1"),
    ("LHCALL_LOAD_GDT, 0x500000, 32, 0", "bad read address 0x500000 len 256"),
    ("LHCALL_LOAD_GDT, 0x500000, 3, 0", "bad read address 0x500000 len 24"),
    # The range must end strictly below pfn_limit (4 MB of RAM and one device page here).
    ("LHCALL_LOAD_GDT, 0x401000 - 256, 32, 0", "bad read address 0x400f00 len 256"),
    ("LHCALL_LOAD_TLS, 0x500000, 0, 0", "bad read address 0x500000 len 24"),
    ("LHCALL_LOAD_TLS, 0xFFFFFFF0, 0, 0", "bad read address 0xfffffff0 len 24"),
])
def test_segment_hypercall_kills(call, death):
    why, text, facts = run(("seg_kill.c", KILL % call))
    assert facts.pfn_limit == 0x401
    assert why == death
    assert "survived" not in text


def test_too_many_entries_is_reported_as_the_guest_asked():
    # 2.6.23 printed num with %i: a u32 of 0xFFFFFFFF reads -1, as in the test above.
    lg = SimpleNamespace(dead=None)
    lg.kill_guest = lambda msg: setattr(lg, "dead", lg.dead or msg)
    segments.load_guest_gdt(lg, 0, 0xFFFFFFFF)
    assert lg.dead == "too many gdt entries -1"


# --- LOAD_GDT -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gdt_run():
    return run("seg_gdt.c")


@pytest.mark.kvm
def test_load_gdt_fixups_reach_the_real_gdt(gdt_run):
    why, text, facts = gdt_run
    assert why == "CRASH: Power down", text
    real = facts.gdt
    # The Host's own entries, whatever the Guest passed (it passed all ones).
    check_host_entries(facts)
    # Kernel code and data came as DPL 0, as Linux has them: now DPL 1 and accessed.
    assert real[12] == (0x0000FFFF, 0x00CFBB00)
    assert real[13] == (0x0000FFFF, 0x00CFB300)
    # User segments keep DPL 3; DPL 2 stays 2; all get the accessed bit.
    assert real[14] == (0x0000FFFF, 0x00CFFB00)
    assert real[15] == (0x0000FFFF, 0x00CFF300)
    assert real[24] == (0x0000FFFF, 0x00CFF300)
    assert real[25] == (0x0000FFFF, 0x00CFD300)
    assert real[18] == (0x0000FFFF, 0x00CFB300)
    # A not-present entry is fixed up all the same, and stays not present.
    assert real[20] == (0x0000FFFF, 0x00CF3300)
    # A 64-bit code segment loses its L bit.
    assert real[21] == (0x0000FFFF, 0x008FBB00)
    # System descriptors (a call gate, a TSS) are marked not present.
    assert not present(real[22]) and not real[22][1] & 0x1000 and dpl(real[22]) == 3
    assert not present(real[23]) and dpl(real[23]) == 1
    # Every entry the Guest owns has its accessed bit; none is a 64-bit segment.
    for i, desc in enumerate(real):
        if i not in host_module(facts).HOST_GDT_ENTRIES:
            assert desc[1] & 0x100, i
            assert not desc[1] & 0x200000, i
            assert dpl(desc) != 0, i
            assert desc == facts.guest_gdt[i], i


@pytest.mark.kvm
def test_load_gdt_segments_are_usable(gdt_run):
    why, text, facts = gdt_run
    results = {}
    for rec in records(text, "R"):
        results.update(rec)
    assert results == {"ds18": 0x5EED0002,           # flat data in %ds
                       "fs19": 0x5EED0001,           # based at vars[], DPL 0 fixed up to 1
                       "fs19+4": 0x5EED0002, "fs": 0x99,   # still there after hypercalls
                       "fs24": 0x5EED0001}           # DPL 3 data, loaded at CPL 1


@pytest.mark.kvm
def test_load_gdt_bad_segments_fault_in_the_guest(gdt_run):
    why, text, facts = gdt_run
    assert [(t["vec"], t["err"], t["at_np"], t["at_sys"]) for t in records(text, "T")] == [
        (11, 20 << 3, 1, 0),        # not present: #NP(selector)
        (13, 23 << 3, 0, 1),        # a system descriptor: #GP(selector)
    ]


@pytest.mark.kvm
def test_load_gdt_with_fewer_entries_keeps_the_rest(gdt_run):
    why, text, facts = gdt_run
    # The last call loaded 14 entries, entry 1 among them; 18 on are as the first call left them.
    assert facts.gdt[1] == (0x0000FFFF, 0x00CFB300)
    assert facts.gdt[18] == (0x0000FFFF, 0x00CFB300)
    assert facts.gdt[24] == (0x0000FFFF, 0x00CFF300)


@pytest.mark.kvm
def test_load_gdt_without_a_kernel_code_segment_kills():
    src = r"""
#include "lguest.h"

static unsigned long table[32][2];

int main(void)
{
	lguest_init();
	hcall(LHCALL_LOAD_GDT, __pa(table), 32, 0);
	printk("survived\n");
	return 0;
}
"""
    why, text, facts = run(("seg_nocs.c", src))
    # 2.6.23: the Switcher faults loading the Guest's segments.
    assert why.startswith("unhandled trap 256 at ")
    assert "survived" not in text


@pytest.mark.parametrize("a,b,want", [
    (0x0000FFFF, 0x00CF9A00, 0x00CFBB00),      # DPL 0 code: DPL 1, accessed
    (0x0000FFFF, 0x00CFFA00, 0x00CFFB00),      # DPL 3 stays
    (0x0000FFFF, 0x00CFDA00, 0x00CFDB00),      # DPL 2 stays
    (0x0000FFFF, 0x00CF1200, 0x00CF3300),      # not present: fixed all the same
    (0x0000FFFF, 0x00AF9A00, 0x008FBB00),      # L bit cleared
    (0x00000000, 0x0000EC00, 0x00006D00),      # call gate: not present
    (0x00000067, 0x00008900, 0x00002900),      # TSS: not present
    (0x00000000, 0x00000000, 0x00002100),      # the null entry
])
def test_fixup_gdt_entry(a, b, want):
    assert segments.fixup_gdt_entry(a, b) == (a, want)


# --- LOAD_TLS -----------------------------------------------------------------------------------

@pytest.mark.kvm
def test_load_tls_entries_reach_the_vcpu():
    why, text, facts = run("seg_tls.c")
    assert why == "CRASH: Power down", text
    lines = text.splitlines()
    # %gs:0 through entry 6 (DPL 0 in the Guest's table) reads var_a; entry 7 (DPL 3) var_b.
    assert "gs6=aaaa0001 gs7=bbbb0002" in lines
    # Entry 8 is not present: #NP with the selector as error code, on the mov to %gs.
    assert "trap 11 err=40 at_np=1" in lines
    # A LOAD_TLS while %gs holds entry 6 takes effect on the way back into the Guest, as
    # 2.6.23's Switcher reloaded the segment registers on every entry.
    assert "reloaded=cccc0003" in lines
    (addrs,) = [line for line in lines if line.startswith("var_b=")]
    var_b, var_c = (int(w.split("=")[1], 16) for w in addrs.split())
    real = facts.gdt
    assert [(base(d), dpl(d), present(d), bool(d[1] & 0x100)) for d in real[6:9]] == [
        (var_c, 1, True, True), (var_b, 3, True, True), (var_c, 1, False, True)]
    # The rest of the GDT is as it was.
    assert real[12] == switcher.INITIAL_GUEST_GDT[12]
    assert real[13] == switcher.INITIAL_GUEST_GDT[13]
    check_host_entries(facts)
