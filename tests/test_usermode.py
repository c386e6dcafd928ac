"""A Guest kernel with a user-mode program: system calls through a DPL 3 trap gate for `int $0x80`
(the direct trap of abi §5.3), demand paging done by the Guest kernel with SET_PMD/SET_PTE, and the
Host exits each system call costs.  The Guest is tests/guests/um_kernel.c with um_user.S."""
import re

import pytest

from lguest_kvm import abi
import guestrun

pytestmark = pytest.mark.kvm
CHECKPOINT_KEY = 0x2000
UCODE, USTACK_TOP, UDATA = 0x08048000, 0x0C000000, 0x10000000   # as in um_user.h
LOOP_N = 20
P, RW, US, A, D = 0x1, 0x2, 0x4, 0x20, 0x40


def run_user(mode=0, paging=None):
    """Run the user-mode Guest to its death: (death message, console text, checkpoint snapshots)."""
    g = guestrun.Booted(guestrun.build("um_kernel.c", "um_user.S", cflags=(f"-DMODE={mode}",)),
                        paging=paging)
    snaps = {}

    def on_dma(b, dma, key):
        assert key == CHECKPOINT_KEY
        tag = abi.lguest_dma.from_buffer(b.mem, dma).addr[0]
        lg = b.lg.guest
        snap = {"exits": dict(lg.exits), "assists": lg.assists, "direct": lg.direct_traps,
                "kvm_pvm": lg.needs_assists, "paging": lg.paging}
        if tag == 1 and lg.paging == "shadow":
            sh = lg.shadow
            snap["shadow"] = {va: (sh.shadow_pte(va), sh.guest_pa(va))
                              for va in (UCODE, USTACK_TOP - 4096, UDATA, UDATA + 0x1000, 0xC0100000)}
            snap["cr3"] = sh.current.cr3
            snap["stack"] = (lg.ss1, lg.esp1, lg.stack_pages)
        snaps[tag] = snap
    try:
        why = g.run(on_dma=on_dma)
    finally:
        g.close()
    snaps["launcher_pgdir"] = g.pgdir
    return why, g.text, snaps


@pytest.fixture(scope="module")
def user_run():
    return run_user()


@pytest.fixture(scope="module")
def shadow_user_run(user_run):
    """The same run on lguest's shadow page tables, whichever backend is the default here."""
    return user_run if user_run[2][1]["paging"] == "shadow" else run_user(paging="shadow")


def program_size(text):
    return int(re.match(r"user program (\d+) bytes\n", text).group(1))


def test_system_calls_and_demand_paging(user_run):
    why, text, _ = user_run
    assert why == "CRASH: Power down"
    size = program_size(text)
    lines = [ln for ln in text.splitlines()[1:] if not ln.startswith("eflags ")]
    faults = [ln for ln in lines if ln.startswith("fault ")]
    assert lines[:len(lines) - len(faults)] == [
        "write 42 (2a)",                                     # syscall 1 printed ebx
        "write 42345 (a569)",                                # syscall 2 returned 40000 + 2345
        # A write to an unmapped page: the kernel mapped it, the value landed in its page, and the
        # Host set Accessed and Dirty in the kernel's PTE.
        "check 10000000: user read 5eed1234, kernel reads 5eed1234, pte flags 67",
        "write 4276944898 (feed0002)",                       # a read fault finds the kernel's fill
        # Writing that clean page was the Host's own fault (Dirty), never seen by the Guest.
        "check 10001008: user read a5a5f00d, kernel reads a5a5f00d, pte flags 67",
        # 6 calls above, 3 checkpoints, 3 * LOOP_N nops and the exit: every frame as from user mode.
        "exit status 7 after 70 syscalls, 70 frames ok",
    ]
    # Exactly two faults reached the Guest: user write (6) and user read (4) of a missing page, with
    # cr2 in lguest_data and the faulting eip inside the user program.
    assert [f.split()[1:3] for f in faults] == [["cr2=10000000", "err=6"], ["cr2=10001004", "err=4"]]
    for f in faults:
        eip = int(f.split("eip=")[1], 16)
        assert UCODE <= eip < UCODE + size


def frame_eflags(text):
    """eflags (less the arithmetic flags) in the first syscall frame and the first #PF frame."""
    m = re.search(r"^eflags at the first syscall (\w+), at the first fault (\w+)$", text, re.M)
    return int(m.group(1), 16), int(m.group(2), 16)


def test_frames_carry_the_users_eflags(user_run):
    _, text, _ = user_run
    sys_flags, fault_flags = frame_eflags(text)
    # Interrupts on (the virtual flag was on in user mode), IOPL 0, no NT or VM.  A reflected fault
    # may carry RF (0x10000), as the hardware fault frame 2.6.23 passed on did.
    assert sys_flags & ~0x10000 == 0x202
    assert fault_flags & ~0x10000 == 0x202


def test_syscall_frame_has_no_resume_flag(user_run):
    _, text, _ = user_run
    assert frame_eflags(text)[0] == 0x202


def test_host_shadows_the_kernels_page_tables(shadow_user_run):
    _, _, snaps = shadow_user_run
    s = snaps[1]
    assert s["cr3"] != snaps["launcher_pgdir"]               # the Guest's own page directory
    ss1, esp1, pages = s["stack"]
    assert (ss1, pages) == (0x69, 1) and esp1 > 0xC0100000 and esp1 % 4096 == 0

    def check(va, flags, mask=P | RW | US):
        spte, gpa = s["shadow"][va]
        assert gpa is not None and spte & ~0xFFF == gpa & ~0xFFF, hex(va)
        assert spte & mask == flags, (hex(va), hex(spte))
    check(UCODE, P | US)                                     # read-only code
    check(USTACK_TOP - 4096, P | RW | US)
    check(UDATA, P | RW | US)
    check(UDATA + 0x1000, P | RW | US)                       # writable once the Host saw it Dirty
    check(0xC0100000, P, P | US)                             # the kernel: supervisor only


def test_exits_per_system_call(user_run):
    """LOOP_N nops between checkpoints 1 and 2, 2 * LOOP_N between 2 and 3: the difference of the two
    intervals is LOOP_N system calls and nothing else."""
    _, _, snaps = user_run

    def delta(a, b, field="exits"):
        if field != "exits":
            return snaps[b][field] - snaps[a][field]
        ea, eb = snaps[a]["exits"], snaps[b]["exits"]
        return {k: eb.get(k, 0) - ea.get(k, 0) for k in set(ea) | set(eb)}

    first, second = delta(1, 2), delta(2, 3)
    per_call = {k: (second[k] - first[k]) / LOOP_N for k in first}
    per_call = {k: v for k, v in per_call.items() if v}
    total = sum(per_call.values())
    msg = "exits per syscall %.2f by vector %s (kvm-pvm: %s, paging: %s)" % (
        total, per_call, snaps[1]["kvm_pvm"], snaps[1]["paging"])
    if snaps[1]["paging"] == "direct":
        # The CPU takes `int $0x80` through the Guest's own DPL 3 gate, and the iret back: no exit.
        assert total == 0 and delta(2, 3, "direct") == delta(1, 2, "direct") == 0, msg
        return
    # kvm-pvm: `int $0x80` at CPL 3 arrives as #UD (6), the return `iret` as #GP (13): 2 exits.
    # Hardware KVM: the `int` is a #GP (13) and the iret runs natively: 1 exit.
    assert 1 <= total <= 3, msg
    assert set(per_call) <= {6, 13}, msg                    # no page faults, no hypercalls
    assert (delta(2, 3, "direct") - delta(1, 2, "direct")) == LOOP_N, msg   # one direct trap each
    if snaps[1]["kvm_pvm"]:
        assert (delta(2, 3, "assists") - delta(1, 2, "assists")) / LOOP_N <= 2, msg


def test_user_cannot_read_the_kernels_pages():
    why, text, _ = run_user(mode=1)
    assert why == "CRASH: Power down"
    lines = text.splitlines()
    seg = [ln for ln in lines if ln.startswith("segfault ")]
    assert len(seg) == 1 and seg[0].split()[1:3] == ["cr2=c0100000", "err=5"]   # present, user
    assert "exit status 139 after 69 syscalls, 69 frames ok" in lines     # killed before its write
