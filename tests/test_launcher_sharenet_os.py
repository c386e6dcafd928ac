"""Two real `lguest` processes on one --sharenet file, each booting the bundled Guest OS with its
own address on the kernel command line, ping each other and power off."""
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.kvm
PROMPT = "lguest$ "


@pytest.fixture(scope="module")
def guest_os():
    from launcher.guest.bundled import bundled_guest
    return bundled_guest()                      # built (or found in the cache) once


def _ping(r, ip, count):
    """Type `ping IP COUNT` and wait for its summary; return the console text it produced."""
    before = len(r.text)
    r.type(f"ping {ip} {count}\n")
    r.expect(f"--- {ip} ping statistics ---", timeout=30)
    r.expect(PROMPT, timeout=15, count=r.text.count(PROMPT) + 1)
    return r.text[before:]


def test_sharenet_guest_os_ping_both_ways(run, guest_os, tmp_path):
    net = tmp_path / "shared.net"
    a = run(f"--sharenet={net}", 64, guest_os, "ip=10.0.0.5")
    a.expect(PROMPT, timeout=30)
    deadline = time.monotonic() + 10
    while not net.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert net.exists()
    b = run(f"--sharenet={net}", 64, guest_os, "ip=10.0.0.6")
    b.expect(PROMPT, timeout=30)

    out = _ping(a, "10.0.0.6", 3)
    assert "3 packets transmitted, 3 received" in out, out
    out = _ping(b, "10.0.0.5", 3)
    assert "3 packets transmitted, 3 received" in out, out

    for r in (a, b):
        r.type("poweroff\n")
    for r in (a, b):
        assert r.wait(20) == 0, (r.text, r.stderr())
        assert "Power down." in r.text
        assert r.stderr() == ""
