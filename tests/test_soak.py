"""Soak: a million hypercalls, a hundred thousand interrupts and a GiB of DMA through one process,
with memory that stays where it was.  The counts are scaled by LGUEST_SOAK_SCALE: tox runs 1% of
it; `LGUEST_SOAK_SCALE=1 tox -- -m soak` runs all of it.  The Guest is lguest-bench's."""
import os

import psutil
import pytest

from launcher.guest.build import build_guest
from lguest_bench import main as bench

pytestmark = [pytest.mark.kvm, pytest.mark.soak]
SCALE = float(os.environ.get("LGUEST_SOAK_SCALE", "0.01"))
LAPS = 16                       # divides 10**6, 10**5 and 2**18 exactly


def run(mode, total):
    n = max(1, int(total * SCALE) // LAPS)
    image = build_guest([bench.HERE / "guests" / "bench.c"],
                        cflags=(f"-DMODE={mode}", f"-DN={n}", f"-DLAPS={LAPS}", "-DMEM_MB=8"))
    marks, _ = bench.run_guest(image, None)
    assert len(marks) == LAPS + 1                              # every lap came back
    return n * LAPS


def test_soak_memory_stays_put():
    proc = psutil.Process()
    run(1, 1000)                                               # warm up
    rss = proc.memory_info().rss
    done = {"hypercalls": run(1, 10 ** 6),                     # LHCALL_FLUSH_ASYNC
            "interrupts": run(11, 10 ** 5),                    # LHREQ_IRQ, delivered
            "DMA bytes": 4096 * run(8, 2 ** 30 // 4096)}       # 4 KiB SEND_DMAs, copied out
    grown = proc.memory_info().rss - rss
    print("soak at scale %g: %s; RSS grew %.1f MiB" % (SCALE, done, grown / 2 ** 20))
    assert grown < 16 * 2 ** 20
