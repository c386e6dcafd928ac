"""An idle Guest costs the host nothing, and its timer wakes it on time.

Not in the nested test machine's selection: there the CPU itself is QEMU's software emulation,
so a wake-up's latency says nothing about the Host.
"""
import statistics
import time

import psutil
import pytest

from lguest_kvm import abi
import guestrun

pytestmark = pytest.mark.kvm
CHECKPOINT_KEY = 0x2000
WAKES, DELAY_NS = 40, 5_000_000


def test_idle_guest_sleeps_and_wakes_on_time():
    g = guestrun.Booted(guestrun.build("irq.c", cflags=("-DMODE=11", f"-DWAKES={WAKES}",
                                                        f"-DDELAY_NS={DELAY_NS}")))
    proc = psutil.Process()
    marks = []

    def on_dma(b, dma, key):
        if key == CHECKPOINT_KEY:
            d = abi.lguest_dma.from_buffer(b.mem, dma)
            marks.append((d.addr[0], time.monotonic(), sum(proc.cpu_times()[:2]), d.addr[1]))
    try:
        why = g.run(on_dma=on_dma)
    finally:
        g.close()
    assert why == "CRASH: Power down", why + g.text
    assert g.text == "woke %d times\n" % (5 + WAKES)

    # Ten seconds of HALT between checkpoints 1 and 2 (five clock events of 2 s): under 1% of a
    # core for the whole process, the vCPU thread and the Host's own threads together.
    (t1, wall1, cpu1, _), (t2, wall2, cpu2, _) = marks[:2]
    assert (t1, t2) == (1, 2)
    assert 9.9 < wall2 - wall1 < 11, wall2 - wall1
    assert (cpu2 - cpu1) / (wall2 - wall1) < 0.01, (cpu2 - cpu1, wall2 - wall1)

    # Each round: checkpoint 3, a clock event 5 ms ahead, HALT, checkpoint 4.  The Guest times its
    # own wake-up by the TSC, from just before SET_CLOCKEVENT to IRQ 0's handler (where the Host
    # gives tsc_khz; elsewhere the time between the two checkpoints as the Launcher saw them, both
    # DMAs and two hypercalls included, stands in as an upper bound).
    rounds = marks[2:]
    assert [m[0] for m in rounds] == [3, 4] * WAKES
    host_late = [(b[1] - a[1]) - DELAY_NS / 1e9 for a, b in zip(rounds[::2], rounds[1::2])]
    guest_late = [b[3] / 1e6 for b in rounds[1::2]]
    late = host_late if any(b[3] == 0xFFFFFFFF for b in rounds[1::2]) else guest_late
    print("idle: %.4f s CPU over %.2f s; wake-up lateness median %.0f us, p90 %.0f us, max %.0f us "
          "(the Launcher's checkpoints: median %.0f us)"
          % (cpu2 - cpu1, wall2 - wall1, statistics.median(late) * 1e6,
             statistics.quantiles(late, n=10)[-1] * 1e6, max(late) * 1e6,
             statistics.median(host_late) * 1e6))
    assert min(host_late) > 0, host_late             # never early
    assert statistics.median(late) < 0.001, sorted(late)
