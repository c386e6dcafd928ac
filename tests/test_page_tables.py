"""Shadow page tables (lguest_kvm/page_tables.py, abi §7) with real Guests.  Every Guest here runs
on the shadow backend, whatever the default; the direct backend's page tables are the Guest's own,
and tests/test_direct.py runs the Guest-visible checks below on it too.

Every Guest here builds its own i386 page directory and PTE pages in its .bss
(tests/guests/pt_*.c, helpers in pt_lib.h), switches to them with NEW_PGTABLE,
and prints what it sees; the tests check the printed values, the death
message, and at "step=" lines the Host's own shadow entries.  A stale shadow
entry shows old data, so the Guests read once *before* each hypercall that
should change what they see: that read proves the hypercall did the work.
"""
import errno
import re
import signal
import struct
import types

import pytest

from guestrun import Booted, build, run_guest
from lguest_kvm import page_tables

pytestmark = pytest.mark.kvm

PAGE_OFFSET = 0xC0000000
UVA = 0x00400000
DATA_PAGE = [0x200000 + n * 4096 for n in range(16)]
P, RW, US, A, D = 0x1, 0x2, 0x4, 0x20, 0x40
WATCHDOG_S = 30


@pytest.fixture(autouse=True)
def shadow_paging(monkeypatch):
    monkeypatch.setenv("LGUEST_KVM_PAGING", "shadow")


@pytest.fixture(autouse=True)
def watchdog():
    """A Host that demand-pages the same fault forever would hang the run: fail instead."""
    def expired(signum, frame):
        pytest.fail("Guest still running after %d s" % WATCHDOG_S, pytrace=False)

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(WATCHDOG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def values(text):
    """{name: int} from every `name=hex` in the Guest's output."""
    return {k: int(v, 16) for k, v in re.findall(r"(\w+)=([0-9a-f]+)\b", text)}


def run_steps(g, on_step, max_reads=10000):
    """Run a Booted Guest to its death, calling on_step(name) at each `step=name` line
    as soon as the Guest has printed it (the Guest is stopped at that console DMA)."""
    seen = 0
    for _ in range(max_reads):
        try:
            r = g.lg.read(8)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return g.lg.read(1024).rstrip(b"\0").decode("latin-1")
            raise
        dma, key = struct.unpack("<II", r)
        assert key == 0, "unexpected DMA to key %#x" % key
        data = b"".join(g.dma_sections(dma))
        g.output += data
        g.set_used_len(dma, len(data))
        for m in re.finditer(r"step=(\w+)", g.text[seen:]):
            on_step(m.group(1))
        seen = len(g.text)
    raise AssertionError("Guest did not finish")


def host(g):
    """The Host's struct lguest for a Booted Guest (while it is open)."""
    return g.lg.guest


# --- NEW_PGTABLE, Accessed/Dirty, SET_PTE ----------------------------------

def test_own_page_tables_accessed_dirty_and_set_pte():
    shadows = {}

    with Booted(build("pt_remap.c")) as g:
        def on_step(name):
            sh = host(g).shadow
            shadows[name] = (sh.current.cr3, sh.shadow_pte(UVA))
        why = run_steps(g, on_step)
    assert why == "CRASH: Power down", g.text
    v = values(g.text)
    pgdir = v["pgdir"]

    # NEW_PGTABLE switched the Host to a shadow of the Guest's directory, with
    # nothing yet at UVA: the first touch is demand-paged.
    assert shadows["switched"] == (pgdir, 0)
    assert v["read"] == 0xA0A0A0A0
    # A read sets Accessed in the Guest's PTE and not Dirty; a write sets Dirty.
    assert v["pte_read"] == DATA_PAGE[0] | P | RW | US | A
    assert v["pte_write"] == DATA_PAGE[0] | P | RW | US | A | D
    assert v["linear"] == 0x12345678                 # the write reached the page

    # A PTE changed without SET_PTE: the shadow still maps the old page.
    assert v["stale"] == 0xA0A0A0A0
    # SET_PTE of a clean entry drops the shadow entry; the next touch faults in
    # the new page and marks the Guest's entry Accessed.
    assert shadows["set_pte_clean"] == (pgdir, 0)
    assert v["remapped"] == 0xB1B1B1B1
    assert v["pte_remapped"] == DATA_PAGE[1] | P | RW | US | A

    # SET_PTE of an Accessed|Dirty entry is installed at once, writable, without
    # the Guest's Global bit.
    cr3, spte = shadows["set_pte_dirty"]
    assert cr3 == pgdir
    assert spte == DATA_PAGE[2] | P | RW | US | A | D
    assert v["dirty_read"] == 0xC2C2C2C2 and v["dirty_write"] == 0x2222

    # Accessed only: installed read-only, so the first write comes back to the
    # Host and marks the Guest's entry Dirty (abi §7.3).
    assert shadows["set_pte_accessed"] == (pgdir, DATA_PAGE[0] | P | US | A)
    assert v["acc_read"] == 0x12345678
    assert v["acc_pte"] == DATA_PAGE[0] | P | RW | US | A | D
    assert v["acc_write"] == 0x3333


# --- Faults that are the Guest's own ------------------------------------------

def test_page_faults_reflected_with_cr2_and_error_code():
    why, text, _ = run_guest("pt_fault.c")
    assert why == "CRASH: Power down", text
    check_pt_fault(text, "shadow")


def check_pt_fault(text, paging):
    """What pt_fault.c printed, on the given backend."""
    got = {k: tuple(int(x, 16) for x in rest)
           for k, *rest in re.findall(r"(\w+)=(\w+)/(\w+)/(\w+)/(\w+)", text)}
    # name: (cr2, error code, faults, value read)
    assert got["ok_read"] == (0, 0, 0, 0x0D0D0D0D)
    assert got["nopgd_read"] == (0x800000, 0, 1, 0xFA17ED)      # PGD entry not present
    assert got["nopgd_write"] == (0x800010, 2, 1, 0)
    assert got["np_read"] == (0x403020, 0, 1, 0xFA17ED)         # PTE not present
    assert got["np_write"] == (0x403000, 2, 1, 0)
    # A read-only PTE: reading is fine, then the write faults present|write, and
    # the page is untouched.
    assert got["ro_read"] == (0, 0, 0, 0x1E1E1E1E)
    assert got["ro_write"] == (0x40100C, 3, 1, 0)
    assert values(text)["ro_pte"] == DATA_PAGE[1] | P | US | A  # never Dirty
    if paging == "shadow":
        # Written before ever being read there is no shadow entry, and 2.6.23
        # reflects the shadow fault's error code: not-present|write.  Nothing in
        # the Guest's PTE changes.
        assert got["ro2_write"] == (0x402004, 2, 1, DATA_PAGE[1] | P | US)
        # The Switcher's 2.6.23 address is just an unmapped Guest address.
        assert got["switcher_read"] == (0xFFC00000, 0, 1, 0xFA17ED)
    else:
        # The CPU walked the Guest's own tables: the page is present, the write
        # is refused, present|write.
        assert got["ro2_write"] == (0x402004, 3, 1, DATA_PAGE[1] | P | US)
        # The Switcher is there, readable at the Guest's ring 1 (supervisor) as
        # on a 2.6.23 Host: its first stub starts `push $0; push $0` (6a 00 68 00).
        assert got["switcher_read"] == (0, 0, 0, 0x0068006A)
    assert got["ok_write"] == (0, 0, 0, 0x600D)


def test_page_fault_before_lguest_init_writes_cr2_at_8():
    with Booted(build("pt_noinit.c")) as g:
        why = g.run()
        cr2 = struct.unpack_from("<I", g.mem, 8)[0]
    assert re.fullmatch(r"unhandled trap 14 at 0xc01[0-9a-f]{5} \(0x800000\)", why), why
    assert cr2 == 0x800000


# --- SET_PMD and FLUSH_TLB ------------------------------------------------------

def test_set_pmd_and_flush_tlb():
    why, text, _ = run_guest("pt_flush.c")
    assert why == "CRASH: Power down", text
    v = values(text)
    assert v["first"] == 0xAAAA0000
    # The PGD entry now names another PTE page: stale until SET_PMD, and a
    # SET_PMD for another directory or for index 1023 changes nothing.
    assert v["pmd_before"] == 0xAAAA0000
    assert v["pmd_other"] == 0xAAAA0000
    assert v["pmd_after"] == 0xBBBB1111
    # FLUSH_TLB(0) drops the user part of the current shadow.
    assert v["flush0_before"] == 0xBBBB1111
    assert v["flush0_same_cr3"] == 0xBBBB1111
    assert v["flush0_after"] == 0xCCCC2222
    # A kernel PTE changed without SET_PTE survives FLUSH_TLB(0); FLUSH_TLB(1)
    # drops everything.
    assert v["kflush_before"] == 0x38383838
    assert v["kflush_stale"] == 0x38383838
    assert v["kflush0"] == 0x38383838
    assert v["kflush1"] == 0xDDDD3333
    assert v["user"] == 0xAAAA0000
    assert v["kpte"] == DATA_PAGE[3] | P | RW | A | D


# --- Several page directories -----------------------------------------------

def test_more_page_directories_than_cached_shadows():
    with Booted(build("pt_multi.c")) as g:
        why = g.run()
        cached = [r.cr3 for r in host(g).shadow.roots if r.used]
    text = g.text
    assert why == "CRASH: Power down", text
    # Each visit saw its own page at UVA, in the order visited.
    assert "01234024133401242031 bad=0\n" in text
    assert "visits=44444\n" in text
    # A SET_PTE for directory 1 made while 0 ran: 0 keeps its page, 1 sees the new one.
    assert "own=100 other=77777777\n" in text
    # A kernel SET_PTE reaches every cached shadow.
    assert "kernel=" + "88888888," * 5 + "\n" in text
    # Never two shadows for one page directory.
    assert len(set(cached)) == len(cached)


# --- SET_STACK and stack pinning ---------------------------------------------

STACK_TOP = PAGE_OFFSET + 0x300000


def _fresh_root_first(roots):
    """Instead of a random shadow slot, a never-used one while there is one."""
    return next((r for r in roots if not r.used), roots[0])


def test_set_stack_pins_unmapped_stack_pages(monkeypatch):
    monkeypatch.setattr(page_tables, "random", types.SimpleNamespace(choice=_fresh_root_first))
    state = {}
    pages = (STACK_TOP - 1, STACK_TOP - 1 - 4096)

    with Booted(build("pt_stack.c", cflags=("-DMODE=0",))) as g:
        def on_step(name):
            lg = host(g)
            state[name] = ([lg.shadow.shadow_pte(va) for va in pages], lg.shadow.current,
                           (lg.ss1, lg.esp1, lg.stack_pages))
        why = run_steps(g, on_step)
    assert why == "CRASH: Power down", g.text
    assert "still alive" in g.text
    guest_ptes = {m[0]: (int(m[1], 16), int(m[2], 16))
                  for m in re.findall(r"step=(\w+) pte1=(\w+) pte2=(\w+)", g.text)}

    # Before SET_STACK nothing maps the stack pages in the shadow.
    assert state["before"][0] == [0, 0]
    assert guest_ptes["before"] == (0x2FF000 | P | RW, 0x2FE000 | P | RW)
    # SET_STACK faults both pages in as writes: present and writable in the
    # shadow, Accessed and Dirty in the Guest's PTEs.
    want_guest = (0x2FF000 | P | RW | A | D, 0x2FE000 | P | RW | A | D)
    want_shadow = [0x2FF000 | P | RW | A | D, 0x2FE000 | P | RW | A | D]
    shadow, _, stored = state["pinned"]
    assert shadow == want_shadow
    assert stored == (0x69, STACK_TOP, 2)
    assert guest_ptes["pinned"] == want_guest
    # FLUSH_TLB(1) throws away every shadow entry, then pins the stack again
    # (the Guest had cleared its A and D bits behind the Host's back).
    assert state["flushed"][0] == want_shadow
    assert guest_ptes["flushed"] == want_guest
    # A blank shadow for a new page directory gets the stack pinned too.
    assert state["new_pgtable"][0] == want_shadow
    assert state["new_pgtable"][1] is not state["flushed"][1]
    assert guest_ptes["new_pgtable"] == want_guest


@pytest.mark.parametrize("mode, message, stored", [
    (1, "bad stack pages 3", (0x69, STACK_TOP, 3)),
    (2, "bad stack segment 104", (0x68, STACK_TOP, 1)),
    (3, "bad stack page 0x7fffff", (0x69, 0x800000, 1)),
    (4, "bad stack page 0xc02fffff", (0x69, STACK_TOP, 1)),
    (5, "attempt to access switcher pages", (0x69, 0, 1)),
])
def test_set_stack_kills(mode, message, stored):
    with Booted(build("pt_stack.c", cflags=("-DMODE=%d" % mode,))) as g:
        why = g.run()
        lg = host(g)
        # 2.6.23 stores the values even when it kills for them.
        assert (lg.ss1, lg.esp1, lg.stack_pages) == stored
    assert why == message
    assert "still alive" not in g.text


# --- Entries the Host refuses -------------------------------------------------

@pytest.mark.parametrize("mode, message", [
    (1, "bad page table entry"),                  # PTE with PWT
    (2, "bad page table entry"),                  # PTE with PSE
    (4, "bad page directory entry"),              # PGD entry with PWT
    (5, "bad page directory entry"),              # PGD entry with PSE
    (6, "bad page directory entry"),              # PGD entry with Global
    (7, "bad page directory entry"),              # PGD entry at pfn_limit
    (8, "attempt to access switcher pages"),      # a mapping under PGD index 1023
    (9, "attempt to access switcher pages"),      # SET_PTE there
    (10, "bad page table entry"),                 # SET_PTE of an Accessed PTE with PWT
])
def test_bad_entries_kill(mode, message):
    why, text, _ = run_guest("pt_kill.c", cflags=("-DMODE=%d" % mode,))
    assert why == message
    assert "before\n" in text and "after" not in text


def test_access_outside_pfn_limit():
    """The last page below pfn_limit (the device page after RAM) maps fine; pfn_limit
    itself kills the Guest."""
    with Booted(build("pt_kill.c", cflags=("-DMODE=3", "-DPFN_LIMIT=1025"))) as g:
        assert g.pfn_limit == 1025
        struct.pack_into("<I", g.mem, 1024 * 4096, 0xDE71CE)
        why = g.run()
    assert why == "bad page table entry"
    assert values(g.text)["last"] == 0xDE71CE
    assert "after" not in g.text


def test_unbacked_page_below_pfn_limit():
    """pfn_limit larger than the Launcher's buffer: a PTE for a page below pfn_limit
    that no memory backs is "failed to get page N"."""
    with Booted(build("pt_kill.c", cflags=("-DMODE=11",)), pfn_limit=2048) as g:
        assert host(g).backed_pages == len(g.mem) // 4096 < 1536
        why = g.run()
    assert why == "failed to get page 1536"
    assert "after" not in g.text


def test_out_of_shadow_pte_pages():
    """The pool always has a block for every PGD entry of every root, so the Host is
    starved by hand here, to see the 2.6.23 message."""
    with Booted(build("pt_noinit.c")) as g:
        host(g).shadow.free_blocks.clear()
        why = g.run()
    assert why == "out of memory allocating pte page"


def test_page_directory_beyond_pfn_limit():
    why, text, _ = run_guest("pt_kill.c", cflags=("-DMODE=12", "-DPFN_LIMIT=1025"))
    # The first fault reads the PGD entry of a kernel page (index 768) or of UVA.
    assert why in ("bad read address 0x401c00", "bad read address 0x401004"), why


def test_read_returns_death_message_after_enoent():
    with Booted(build("pt_kill.c", cflags=("-DMODE=1",))) as g:
        for _ in range(1000):
            try:
                dma, key = struct.unpack("<II", g.lg.read(8))
            except OSError as e:
                assert e.errno == errno.ENOENT
                break
            g.set_used_len(dma, 0)
        else:
            raise AssertionError("Guest did not die")
        assert g.lg.read(1024) == b"bad page table entry\0"
        assert g.lg.read(5) == b"bad p"
        assert g.lg.read(1024) == b"bad page table entry\0"   # and it stays dead
        with pytest.raises(OSError) as e:
            g.lg.write(struct.pack("<2I", 1, 0))               # LHREQ_IRQ
        assert e.value.errno == errno.ENOENT
