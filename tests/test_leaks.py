"""Leaks: open, INITIALIZE, run to its death and close many Guests in one process; file
descriptors, threads and memory mappings come back to where they were, and memory settles.  The count is
LGUEST_LEAK_GUESTS (default 1000)."""
import gc
import os

import psutil
import pytest

import guestrun

pytestmark = pytest.mark.kvm
GUESTS = int(os.environ.get("LGUEST_LEAK_GUESTS", "1000"))


def one_guest(image):
    why, _, _ = guestrun.run_guest_image(image)
    assert why == "already have lguest_data"              # hc.c MODE 2: LGUEST_INIT twice


def test_a_thousand_guests_leave_nothing_behind():
    image = guestrun.build("hc.c", cflags=("-DMODE=2",))
    proc = psutil.Process()
    for _ in range(20):                                   # warm caches, imports, the registry
        one_guest(image)
    # What earlier tests left for the collector goes now, not in the middle of the count.
    gc.collect()
    fd_set = set(os.listdir("/proc/self/fd"))
    fds, threads, rss = proc.num_fds(), proc.num_threads(), proc.memory_info().rss
    maps = len(proc.memory_maps(grouped=False))
    for _ in range(GUESTS):
        one_guest(image)
    grown = proc.memory_info().rss - rss
    print("%d Guests: fds %d -> %d, threads %d -> %d, RSS grew %.1f MiB"
          % (GUESTS, fds, proc.num_fds(), threads, proc.num_threads(), grown / 2 ** 20))
    # No descriptor of ours stays open; one of somebody else's may have been closed meanwhile.
    assert set(os.listdir("/proc/self/fd")) <= fd_set
    assert proc.num_fds() <= fds
    assert proc.num_threads() == threads
    assert len(proc.memory_maps(grouped=False)) <= maps + 2   # no mapping left per Guest
    assert grown < 32 * 2 ** 20
