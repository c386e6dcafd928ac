"""Hardware semantics: on hardware KVM (Intel VMX, AMD SVM) the CPU itself runs every instruction
of the Guest, so the kvm-pvm assists (lguest_kvm/assist.py) must never run, and hypercalls must
arrive through the Switcher's DPL 1 gate 0x1F.  These tests run in the nested test machine
(`tox -e hw`, hw/README.md), and on any host with hardware KVM; elsewhere they are skipped, except
where LGUEST_REQUIRE_HW=1 (inside the test machine) makes a kind without hardware semantics a
failure.  The Guest is tests/guests/hw_sem.c."""

import pytest

import guestrun
import lguest_kvm
from lguest_kvm import abi

pytestmark = [pytest.mark.kvm, pytest.mark.hw]
CHECKPOINT_KEY = 0x2000
HCALLS = 50                                   # as in hw_sem.c


@pytest.fixture(scope="module", autouse=True)
def hardware(hardware_kvm):
    return hardware_kvm


@pytest.fixture(scope="module")
def hw_run(hardware_kvm):
    """Run hw_sem.c to its death: (death, text, Host facts at checkpoints 1 and 2, final facts)."""
    g = guestrun.Booted(guestrun.build("hw_sem.c"))
    snaps = {}

    def on_dma(b, dma, key):
        assert key == CHECKPOINT_KEY
        lg = b.lg.guest
        snaps[abi.lguest_dma.from_buffer(b.mem, dma).addr[0]] = (
            dict(lg.exits), lg.assists, lg.direct_traps)
    try:
        why = g.run(on_dma=on_dma)
        lg = g.lg.guest
        final = dict(needs_assists=lg.needs_assists, assists=lg.assists, kind=g.lg.kind,
                     paging=lg.paging)
    finally:
        g.close()
    return why, g.text, snaps, final


def test_the_host_knows_it_is_on_hardware_kvm(hardware_kvm, hw_run):
    *_, final = hw_run
    assert final["kind"] == hardware_kvm
    assert final["needs_assists"] is False


def test_the_guest_ran_hypercalls_a_trap_an_iret_and_int_0x80(hw_run):
    why, text, _, _ = hw_run
    assert why == "CRASH: Power down", text
    lines = text.splitlines()
    assert "ud eip_ok=1 cs=61" in lines                   # #UD reflected, frame from CPL 1
    assert "sys cs=61 eax_in=80 eax_out=5ec0de" in lines   # int $0x80 and back through iret


def test_no_assists_and_hypercalls_through_the_switcher(hw_run):
    _, text, snaps, final = hw_run
    (exits1, assists1, direct1), (exits2, assists2, direct2) = snaps[1], snaps[2]
    assert final["assists"] == 0 and assists1 == assists2 == 0
    delta = {k: exits2.get(k, 0) - exits1.get(k, 0) for k in set(exits1) | set(exits2)}
    delta = {k: v for k, v in delta.items() if v}
    # HCALLS empty hypercalls and the checkpoint's SEND_DMA, each one exit on gate 0x1F.  The iret
    # back from each handler runs on the CPU without an exit.  On the long-mode (shadow) backend the
    # ud2 is one #UD exit and the `int $0x80` one #GP exit, which the Host turns into a direct trap;
    # on the direct backend the CPU takes both through the Guest's own gates, without an exit.
    if final["paging"] == "direct":
        assert delta == {abi.LGUEST_TRAP_ENTRY: HCALLS + 1}, (delta, text)
        assert direct2 - direct1 == 0
    else:
        assert delta == {abi.LGUEST_TRAP_ENTRY: HCALLS + 1, 6: 1, 13: 1}, (delta, text)
        assert direct2 - direct1 == 1
