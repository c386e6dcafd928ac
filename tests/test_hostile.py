"""Hostile Guests (tests/guests/hostile.c), seeded and reproducible: random hypercalls, DMA keys and
sections everywhere, garbage page tables, wild GDT and IDT entries, a fault nobody can take, a
storm of hypercalls and timers, a Guest spinning with interrupts off, attempts at CPL 0, garbage
aimed at the Switcher's 4 MB at 0xFFC00000 on both paging backends.  Each
runs under the real `lguest` command: the Guest either survives, or keeps running and the
Launcher still ends cleanly on SIGTERM, or dies with a 2.6.23 kill message, which the Launcher
prints as its last line before exiting 1.  The Host never crashes."""
import errno
import os
import re
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import guestrun
from lguest_kvm import abi

pytestmark = pytest.mark.kvm
ROOT = Path(__file__).resolve().parent.parent
# The kill messages of lguest_kvm (abi §12's and this Host's own), as patterns.
KILLS = [r"CRASH: .*", r"Bad hypercall \d+", r"bad (read|write) address 0x[0-9a-f]+( len \d+)?",
         r"bad dma key 0x[0-9a-f]+", r"bad sending DMA key", r"bad address in sending DMA",
         r"bad registered DMA buffer", r"bad DMA entry: \d+@0x[0-9a-f]+", r"bad IDT type \d+",
         r"bad page directory entry", r"bad page table entry", r"bad page directory 0x[0-9a-f]+",
         r"bad guest page [0-9a-f]+", r"attempt to access switcher pages",
         r"bad stack page 0x[0-9a-f]+", r"bad stack pages \d+", r"bad stack segment \d+",
         r"too many gdt entries -?\d+", r"unhandled trap \d+ at 0x[0-9a-f]+ \(0x[0-9a-f]+\)",
         r"failed to get page \d+", r"Fetching async hypercalls", r"Writing cr2",
         r"Disabling interrupts", r"Re-enabling interrupts", r"Writing result for async hypercall",
         r"KVM cannot run the instruction at .*", r"out of memory allocating pte page",
         r"unexpected I/O exit on port 0x[0-9a-f]+"]
KILL = re.compile("|".join("(?:%s)" % k for k in KILLS))


RUNNING = "still running"
PATIENCE = 60                        # seconds: every attack ends in well under one here


def lguest(image, paging=None):
    """Run the Guest under the lguest command (with --paging=PAGING if given).  One that is still running after PATIENCE seconds
    (a wild gate can send it round a loop of its own traps that never leaves the VM, on the direct
    backend) must still answer SIGTERM by ending cleanly: then returncode is RUNNING."""
    opts = [f"--paging={paging}"] if paging else []
    p = subprocess.Popen([sys.executable, "-m", "launcher", *opts, "16", str(image)], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=PATIENCE)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)
    except subprocess.TimeoutExpired:
        p.terminate()
        out, err = p.communicate(timeout=30)
        assert p.returncode == -signal.SIGTERM, (p.returncode, err)
        return subprocess.CompletedProcess(p.args, RUNNING, out, err)


@pytest.mark.parametrize("mode, seed", [(m, s) for m in (1, 2, 3, 4) for s in range(1, 6)]
                         + [(5, 1), (6, 1), (8, 1)])
def test_hostile_guest(mode, seed):
    image = guestrun.build("hostile.c", cflags=(f"-DMODE={mode}", f"-DSEED={seed}"))
    check_outcome(lguest(image))


def check_outcome(r):
    """The Host survived: the Guest powered off after saying "survived", or was still running and
    ended cleanly on SIGTERM, or died with a kill message, the Launcher's last line.  Returns the
    kill message, or None."""
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    if r.returncode == RUNNING:
        assert r.stderr == "", r.stderr               # it kept running, and SIGTERM ended it
        return None
    if r.returncode == 0:
        assert "survived" in r.stdout and r.stderr == "", (r.stdout, r.stderr)
        return None
    assert r.returncode == 1, (r.returncode, r.stderr)
    *warnings, line = r.stderr.splitlines()
    assert line.startswith("lguest: ") and KILL.fullmatch(line[len("lguest: "):]), line
    # Before it, only the Launcher's 2.6.23 warning for a DMA to a key nobody watches.
    assert all(re.fullmatch(r"lguest: Pending dma 0x[0-9a-f]+, key 0x[0-9a-f]+", w) for w in warnings), \
        warnings
    return line[len("lguest: "):]


# The Switcher's 4 MB (PGD entry 1023), attacked three ways: 9 stores garbage straight into it
# (its first eight pages, then anywhere); 10 aims SET_PMD (index 1023 and beyond) and then SET_PTE
# at it; 11 writes its own page directory's entry 1023 (garbage, or a page table of its own), then
# stores garbage there, asks SET_PMD to look at entry 1023, and stores again.
SWITCHER_ATTACKS = [(9, 1), (9, 2), (10, 1), (10, 2), (11, 1), (11, 2), (11, 3), (11, 4)]
SWITCHER_STORES = 8 + 200


def switcher_attack(mode, seed, paging):
    image = guestrun.build("hostile.c", cflags=(f"-DMODE={mode}", f"-DSEED={seed}"))
    r = lguest(image, paging)
    return r, check_outcome(r)


@pytest.mark.parametrize("mode, seed", SWITCHER_ATTACKS)
def test_switcher_attacks_on_shadow_paging(mode, seed):
    """With shadow paging the Switcher is not in the Guest's address space at all.  Its own page
    directory has nothing at entry 1023, so a store there is the Guest's own page fault, reflected
    with cr2, every time; SET_PMD at 1023 and above is ignored and SET_PTE there kills; an entry
    1023 the Guest wrote itself kills at the first touch, as lguest's demand_page() did."""
    r, why = switcher_attack(mode, seed, "shadow")
    if mode == 9:
        assert r.returncode == 0, (r.returncode, r.stderr)
        assert "switcher stores %d faults %d wrong cr2 0\n" % (SWITCHER_STORES, SWITCHER_STORES) \
            in r.stdout, r.stdout
        return
    assert why == "attempt to access switcher pages", (r.returncode, r.stdout, r.stderr)
    assert "survived" not in r.stdout and "stores" not in r.stdout, r.stdout
    assert ("set_pmd at the top ignored" in r.stdout) == (mode == 10), r.stdout
    assert "set_pte" not in r.stdout


@pytest.mark.parametrize("mode, seed", SWITCHER_ATTACKS)
def test_switcher_attacks_on_direct_paging(hardware_kvm, mode, seed):
    """With direct paging the Switcher is mapped at 0xFFC00000 in the Guest's own tables, read-only
    but for its register page, which the Guest may scribble on (the next trap writes the whole
    frame afresh).  Whatever the Guest does to it, it dies with a kill message or keeps running,
    and the Host process is intact; SET_PTE at the top still kills, as on shadow."""
    image = guestrun.build("hostile.c", cflags=(f"-DMODE={mode}", f"-DSEED={seed}"))
    r = lguest(image, "direct")
    if mode == 11 and r.returncode == 1 and \
            re.fullmatch(r"lguest: unexpected KVM exit \d+\n", r.stderr):
        # The Guest pointed the CPU's own walk of the Switcher's tables somewhere KVM could not
        # follow; the Host killed it for that.
        return
    why = check_outcome(r)
    if mode == 10:
        assert why == "attempt to access switcher pages", (r.returncode, r.stdout, r.stderr)
        assert "set_pmd at the top ignored" in r.stdout and "set_pte" not in r.stdout
    if mode == 9 and "switcher stores" in r.stdout:
        assert "wrong cr2 0\n" in r.stdout, r.stdout


def test_reaching_cpl0_is_refused_every_time():
    """Far calls to the Switcher's code and data, its TSS and a not-present entry all fault in the
    Guest; a DPL 0 code segment of the Guest's own was made DPL 1, so a far call through it runs at
    CPL 1 (cs 0xa1), not 0."""
    image = guestrun.build("hostile.c", cflags=("-DMODE=8",))
    r = lguest(image)
    assert r.returncode == 0 and "refused 5 probe cs a1" in r.stdout, (r.stdout, r.stderr)


def test_a_guest_spinning_with_interrupts_off_still_answers():
    """It never exits on its own; BREAK still brings read() back, and close() ends it."""
    g = guestrun.Booted(guestrun.build("hostile.c", cflags=("-DMODE=7",)))
    try:
        t = threading.Timer(0.3, lambda: g.lg.write(struct.pack("<II", abi.LHREQ_BREAK, 1)))
        t.start()
        with pytest.raises(OSError) as e:
            while True:
                g.lg.read(8)
        assert e.value.errno == errno.EAGAIN
        assert g.lg.write(struct.pack("<II", abi.LHREQ_BREAK, 0)) == 0
        t.join()
        assert g.lg.guest.dead is None
    finally:
        g.close()
