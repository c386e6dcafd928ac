"""Opening, running and closing Guests over and over leaks nothing."""
import gc

import psutil
import pytest

import guestrun

pytestmark = pytest.mark.kvm
SHORT = ("short.c", '#include "lguest.h"\nint main(void) { lguest_init(); printk("x"); return 0; }\n')


def test_no_fd_or_memory_leak_over_many_guests():
    image = guestrun.build(SHORT)
    proc = psutil.Process()

    def once():
        g = guestrun.Booted(image)
        assert g.run() == "CRASH: Power down" and g.text == "x"
        g.close()

    once()
    gc.collect()
    fds, vms = proc.num_fds(), proc.memory_info().vms
    for _ in range(20):
        once()
    gc.collect()
    assert proc.num_fds() == fds
    # Each Guest maps 36 MiB or more (its RAM and the Host slot); 20 leaked Guests would show.
    assert proc.memory_info().vms - vms < 16 << 20
