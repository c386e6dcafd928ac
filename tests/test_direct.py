"""The direct backend (lguest_kvm/direct.py): the Guest in 32-bit protected mode on its own page
tables, EPT/NPT underneath, the Switcher at 0xFFC00000.  It needs hardware KVM, so these tests run
in the nested test machine (`tox -e hw`); on kvm-pvm only the refusal is tested.  The same Guests
run on both backends and must behave identically; the exit counts show what direct saves."""
import errno
import mmap
import struct

import pytest

import guestrun
import lguest_kvm
from lguest_kvm import abi, direct
import test_usermode

pytestmark = pytest.mark.kvm
CHECKPOINT_KEY = 0x2000


def test_direct_paging_needs_hardware_kvm(monkeypatch):
    monkeypatch.delenv("LGUEST_KVM_PAGING", raising=False)
    kind = lguest_kvm.kvm_kind()
    mem = mmap.mmap(-1, 1 << 20)
    if kind in ("vmx", "svm"):
        with lguest_kvm.open(mem) as lg:
            assert lg.paging == "direct"                     # the default where it can run
        return
    with pytest.raises(OSError) as e:
        lguest_kvm.open(mem, paging="direct")
    assert e.value.errno == errno.EINVAL and kind in str(e.value)
    with lguest_kvm.open(mem) as lg:
        assert lg.paging == "shadow"
    with pytest.raises(OSError) as e:
        lguest_kvm.open(mem, paging="nested")
    assert e.value.errno == errno.EINVAL


@pytest.fixture(scope="module")
def both(hardware_kvm):
    """The user-mode Guest (system calls, demand paging by its kernel) run on each backend."""
    return {p: test_usermode.run_user(paging=p) for p in ("shadow", "direct")}


def test_both_backends_run_the_guest_alike(both):
    (why_s, text_s, _), (why_d, text_d, _) = both["shadow"], both["direct"]
    assert why_s == why_d == "CRASH: Power down"
    assert text_s == text_d


def exits_between(snaps, a, b):
    ea, eb = snaps[a]["exits"], snaps[b]["exits"]
    return {k: eb.get(k, 0) - ea.get(k, 0) for k in set(ea) | set(eb) if eb.get(k, 0) != ea.get(k, 0)}


def test_direct_system_calls_take_no_exits(both):
    """Between checkpoints 2 and 3 the user program makes 2 * LOOP_N system calls and a checkpoint;
    on the direct backend the only exit is that checkpoint's hypercall."""
    _, _, shadow = both["shadow"]
    _, _, direct_ = both["direct"]
    d = exits_between(direct_, 2, 3)
    s = exits_between(shadow, 2, 3)
    print("exits between checkpoints 2 and 3: shadow %s, direct %s" % (s, d))
    assert d == {abi.LGUEST_TRAP_ENTRY: 1}
    assert s.get(13, 0) >= 2 * test_usermode.LOOP_N           # shadow: a #GP exit per `int $0x80`
    assert direct_[3]["direct"] == 0                          # no system call needed the Host


def test_direct_page_faults_only_for_the_guests_own(both):
    """Page faults that reach the Host: on direct only the two the Guest's own tables did not
    satisfy (its kernel then maps the page); shadow also takes one per page it fills in."""
    _, _, shadow = both["shadow"]
    _, _, direct_ = both["direct"]
    d_faults, s_faults = direct_[3]["exits"].get(14, 0), shadow[3]["exits"].get(14, 0)
    print("page fault exits up to checkpoint 3: shadow %d, direct %d" % (s_faults, d_faults))
    assert d_faults == 2
    assert s_faults > d_faults


def test_the_switcher_sits_in_every_page_directory(hardware_kvm):
    g = guestrun.Booted(guestrun.build("um_kernel.c", "um_user.S", cflags=("-DMODE=0",)),
                        paging="direct")
    seen = []

    def on_dma(b, dma, key):
        lg = b.lg.guest
        seen.append((lg.shadow.current.cr3,
                     struct.unpack_from("<I", b.mem, lg.shadow.current.cr3 + 4 * 1023)[0]))
    try:
        assert g.run(on_dma=on_dma) == "CRASH: Power down"
        pgdir0 = struct.unpack_from("<I", g.mem, g.pgdir + 4 * 1023)[0]
    finally:
        g.close()
    accessed_dirty = 0x60                                      # the CPU's to set
    assert pgdir0 & ~accessed_dirty == direct.SWITCHER_PDE
    assert seen and all(pde & ~accessed_dirty == direct.SWITCHER_PDE for _, pde in seen)
    assert any(cr3 != g.pgdir for cr3, _ in seen)             # the Guest's own page directory too


def test_direct_page_faults_reflected_with_cr2_and_error_code(hardware_kvm):
    import test_page_tables
    why, text, _ = guestrun.run_guest("pt_fault.c", paging="direct")
    assert why == "CRASH: Power down", text
    test_page_tables.check_pt_fault(text, "direct")


def test_direct_access_outside_pfn_limit(hardware_kvm):
    """A Guest PTE naming the page at pfn_limit: the CPU takes it, but no memory is behind it in
    the VM, and the Guest dies with lguest's words for that."""
    with guestrun.Booted(guestrun.build("pt_kill.c", cflags=("-DMODE=3", "-DPFN_LIMIT=1025")),
                         paging="direct") as g:
        struct.pack_into("<I", g.mem, 1024 * 4096, 0xDE71CE)
        why = g.run()
    assert why == "failed to get page 1025"
    assert "after" not in g.text


@pytest.mark.parametrize("mode, message", [
    (1, "bad stack pages 3"), (2, "bad stack segment 104"), (3, "bad stack page 0x7fffff"),
    (4, "bad stack page 0xc02fffff"), (5, "attempt to access switcher pages")])
def test_direct_set_stack_kills(hardware_kvm, mode, message):
    why, text, _ = guestrun.run_guest("pt_stack.c", cflags=("-DMODE=%d" % mode,), paging="direct")
    assert why == message
    assert "still alive" not in text


def run_pt_bench(paging, n=16):
    """pt_bench.c on one backend: exits by vector between its four checkpoints."""
    g = guestrun.Booted(guestrun.build("pt_bench.c", cflags=("-DN=%d" % n,)), paging=paging)
    snaps = {}

    def on_dma(b, dma, key):
        snaps[abi.lguest_dma.from_buffer(b.mem, dma).addr[0]] = {"exits": dict(b.lg.guest.exits)}
    try:
        assert g.run(on_dma=on_dma) == "CRASH: Power down"
    finally:
        g.close()
    assert g.text == "faults=%d\n" % n
    return [exits_between(snaps, a, a + 1) for a in (1, 2, 3)]


def test_exits_per_page_fault_and_context_switch(hardware_kvm):
    """16 of each: page faults the Guest handles (two SET_PTEs each), TLB flushes each followed by
    16 reads of pages its tables map, and context switches there and back."""
    hc = abi.LGUEST_TRAP_ENTRY
    faults, flushes, switches = run_pt_bench("direct")
    print("direct:", faults, flushes, switches)
    print("shadow:", *run_pt_bench("shadow"))
    assert faults == {14: 16, hc: 2 * 16 + 1}          # the fault, its two SET_PTEs, a checkpoint
    assert flushes == {hc: 16 + 1}                     # the flushes: the reads never fault
    assert switches == {hc: 2 * 16 + 1}                # a NEW_PGTABLE each way


def test_shadow_refills_after_every_flush(hardware_kvm):
    _, flushes, _ = run_pt_bench("shadow")
    assert flushes[14] >= 16 * 16                      # every read faults the shadow entry back in
