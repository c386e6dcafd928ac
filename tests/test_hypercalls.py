"""Each hypercall of 2.6.23, with the kill messages it can cause, on a Guest that really runs."""
import time

import pytest

from lguest_kvm import abi
import guestrun

pytestmark = pytest.mark.kvm
CHECKPOINT_KEY = 0x2000


def run_mode(mode, on_checkpoint=None, **kw):
    """Run tests/guests/hc.c built with MODE=mode.  on_checkpoint(guest, tag) sees the Host state."""
    g = guestrun.Booted(guestrun.build("hc.c", cflags=(f"-DMODE={mode}",)), **kw)
    seen = []

    def on_dma(b, dma, key):
        if key == CHECKPOINT_KEY:
            tag = abi.lguest_dma.from_buffer(b.mem, dma).addr[0]
            seen.append(tag)
            if on_checkpoint:
                on_checkpoint(b.lg.guest, tag)
    try:
        why = g.run(on_dma=on_dma)
    finally:
        g.close()
    return why, g.text, seen


def test_hypercall_before_lguest_init_kills():
    assert run_mode(1)[0] == "hypercall 5 before LGUEST_INIT"


def test_lguest_init_twice_kills():
    assert run_mode(2)[0] == "already have lguest_data"


def test_lguest_init_fills_in_lguest_data():
    before = int(time.time())
    why, text, _ = run_mode(3)
    assert why == "CRASH: Power down"
    fields = dict(kv.split("=") for kv in text.split())
    assert fields["reserve_mem"] == "400000"
    assert 0 <= int(fields["guestid"]) < 16
    sec = int(fields["time"].split(".")[0])
    assert before <= sec <= time.time() + 1
    # tsc_khz only where the host's TSC is constant and does not stop (2.6.23's rule).
    flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    if "constant_tsc" in flags and "nonstop_tsc" in flags:
        assert int(fields["tsc_khz"]) > 100000
    else:
        assert fields["tsc_khz"] == "0"


def test_lguest_init_outside_memory_kills():
    assert run_mode(4)[0] == "bad guest page 007ff000"


def test_crash_reads_128_bytes():
    assert run_mode(5)[0] == "CRASH: " + "x" * 127


def test_crash_from_bad_address():
    assert run_mode(6)[0] == "bad read address 0x7fffff0 len 128"


def test_removed_hypercall_11():
    assert run_mode(7)[0] == "Bad hypercall 11\n"


def test_unknown_hypercall_and_eax_unchanged():
    why, text, _ = run_mode(8)
    assert why == "Bad hypercall 99\n"
    assert text == "flush_async eax=0\nts eax=8\n"


def test_load_idt_entry():
    def check(lg, tag):
        assert lg.idt[3] == ((0x61 << 16) | 0x1234, 0xC010EF00)   # selector forced, bit 12 cleared
        assert lg.idt[8] == (0, 0) and lg.idt[2] == (0, 0)        # the Host's own vectors
        assert lg.syscall_idt == ((0x61 << 16) | 0x1111, 0xC010EF00)
        assert lg.idt[4] == (0, 0)                                 # not present: zeroed
        assert all(e == (0, 0) for e in lg.idt[9:64])              # vector 70 went nowhere
    why, _, seen = run_mode(9, check)
    assert seen == [9]
    assert why == "bad IDT type 5"


def test_ts_and_set_stack_are_recorded():
    states = {}

    def check(lg, tag):
        def ready(va):                  # present and writable for the CPU, on either backend
            if lg.paging == "direct":
                return 3 if lg.shadow.writable(va) else 0
            return lg.shadow.shadow_pte(va) & 3
        states[tag] = (lg.ts, lg.ss1, lg.esp1, lg.stack_pages, ready(0xC01FFFFF), ready(0xC01FEFFF))
    why, _, _ = run_mode(10, check)
    assert why == "CRASH: Power down"
    assert states[10] == (8, 0x69, 0xC0200000, 2, 3, 3)      # both stack pages present and writable
    assert states[11][0] == 0


def test_send_dma_to_a_private_key():
    g = guestrun.Booted(guestrun.build("hc.c", cflags=("-DMODE=11",)))
    try:
        def on_dma(b, dma, key):
            assert key == 0x3000
            assert b.dma_sections(dma) == [b"dma payload"]
            b.set_used_len(dma, 11)
        why = g.run(on_dma=on_dma)
    finally:
        g.close()
    assert g.text == "used_len=11\n"
    assert why == "bad sending DMA key"


def test_send_dma_key_outside_launcher_memory():
    assert run_mode(12)[0] == "bad sending DMA key"


def test_async_ring_runs_in_order_and_stops_at_send_dma():
    states = {}

    def check(lg, tag):
        states[tag] = (lg.idt[40] != (0, 0), lg.ts, lg.next_hcall)
    why, text, _ = run_mode(13, check)
    assert states[13] == (True, 0, 2)     # the IDT entry loaded, TS still waiting behind the DMA
    assert text == "status ff ff ff ff\n"
    assert states[14] == (True, 0, 4)     # TS(8) then TS(0) ran; slot 63 was never reached
    assert why == "CRASH: Power down"


def test_unhandled_trap_kills_with_eip():
    why = run_mode(14)[0]
    assert why.startswith("unhandled trap 6 at 0xc01") and why.endswith(" (0x0)")


def test_in_and_out_are_emulated():
    why, text, _ = run_mode(15)
    assert text.startswith("in: 1234ffff ffffffff ffffffff out left eax 12345678\nud at c01")
    assert why == "CRASH: Power down"
