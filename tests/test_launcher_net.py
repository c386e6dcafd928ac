"""The Launcher's network devices: --tunnet (a TAP in a network namespace made for the test, never
the host's own interfaces) and --sharenet (two Launchers on one file)."""
import errno
import fcntl
import itertools
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from guestrun import build   # noqa: E402

pytestmark = pytest.mark.kvm
_names = itertools.count()


def _need_netns():
    if os.geteuid() != 0:
        pytest.skip("--tunnet tests need root (a network namespace and a TAP device)")
    if shutil.which("ip") is None:
        pytest.skip("--tunnet tests need iproute2's ip command to make a network namespace")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun")


@pytest.fixture
def netns():
    """A fresh network namespace, deleted afterwards (the TAP devices die with it)."""
    _need_netns()
    name = f"lgtest{os.getpid()}x{next(_names)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                   capture_output=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


def ns_ip(ns, *args):
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def ln_console():
    return build("ln_console.c")


@pytest.fixture(scope="module")
def ln_net():
    return build("ln_net.c")


def test_tunnet_address_and_link(run, netns, ln_console):
    r = run("-v", "--tunnet=10.77.3.1", 4, ln_console, prefix=("ip", "netns", "exec", netns))
    r.expect("ln: ready")
    assert "ln: dev 0 type 2 features 8001 pages 1 pfn 401" in r.text      # slot 1, RANDOMNESS
    addr = ns_ip(netns, "-4", "addr", "show", "dev", "tap0")
    assert "inet 10.77.3.1/" in addr
    link = ns_ip(netns, "link", "show", "dev", "tap0")
    assert re.search(r"<[^>]*\bUP\b", link), link
    mac = re.search(r"link/ether ([0-9a-f:]{17})", link).group(1)
    assert f"tun tap0: 10.77.3.1, mac {mac}" in r.stderr()
    r.type("quit\n")
    assert r.wait() == 0
    assert "tap0" not in ns_ip(netns, "link")                 # gone with the Launcher


def test_tunnet_bridge(run, netns, ln_console):
    subprocess.run(["ip", "-n", netns, "link", "add", "lgbr0", "type", "bridge"], check=True)
    r = run("--tunnet=bridge:lgbr0", 4, ln_console, prefix=("ip", "netns", "exec", netns))
    r.expect("ln: ready")
    assert "tap0" in ns_ip(netns, "link", "show", "master", "lgbr0")
    assert "inet " not in ns_ip(netns, "-4", "addr", "show", "dev", "tap0")
    r.type("quit\n")
    assert r.wait() == 0


def test_tunnet_bad_bridge_is_one_line(run, netns, ln_console):
    r = run("--tunnet=bridge:nosuchbr", 4, ln_console, prefix=("ip", "netns", "exec", netns))
    assert r.wait() == 1
    assert r.stderr() == "lguest: adding tap0 to bridge nosuchbr: No such device\n"


SNIFFER = textwrap.dedent("""
    import socket
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
    s.settimeout(30)
    print("listening", flush=True)
    while True:
        data, addr = s.recvfrom(2048)
        if data[12:14] == b"\\x88\\xb5":
            print("got", addr[0], data[:6].hex(), data[6:12].hex(), data[14:31].decode(),
                  flush=True)
            out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            out.bind((addr[0], 0))
            out.send(data[6:12] + bytes.fromhex("021122334455") + b"\\x88\\xb5"
                     + b"hello from the host".ljust(50, b"\\0"))
            break
""")


def test_tunnet_frames_both_ways(run, netns, ln_net):
    sniff = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", SNIFFER],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sniff.stdout.readline() == "listening\n"
        r = run("-v", "--tunnet=10.77.4.1", 4, ln_net, prefix=("ip", "netns", "exec", netns),
                stdin=subprocess.DEVNULL)
        assert r.wait(30) == 0, r.stderr()
        out, err = sniff.communicate(timeout=10)
    finally:
        if sniff.poll() is None:
            sniff.kill()
    text = r.text
    assert "ln: net dev 0 features 8001 slot 1\n" in text
    tap_mac = re.search(r"tun tap0: 10.77.4.1, mac ([0-9a-f:]{17})", r.stderr()).group(1)
    octets = [int(x, 16) for x in tap_mac.split(":")]
    octets[0] |= 1                                            # slot 0: the TAP, promiscuous
    assert "ln: peer slot 0\n" in text
    assert "ln: peer mac %s\n" % ":".join("%x" % o for o in octets) in text
    assert "ln: sent 64 bytes to slot 0\n" in text
    assert "ln: received 64 bytes [hello from the host]\n" in text
    assert out.split()[:2] == ["got", "tap0"] and out.split()[2] == "ff" * 6
    assert "hello from slot 1" in out


# --- sharenet ---------------------------------------------------------------------------------

def test_sharenet_two_guests_talk(run, ln_net, tmp_path):
    net = tmp_path / "shared.net"
    a = run("--sharenet=%s" % net, 4, ln_net, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not net.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    b = run("--sharenet=%s" % net, 4, ln_net, stdin=subprocess.DEVNULL)
    assert a.wait(30) == 0, a.stderr()
    assert b.wait(30) == 0, b.stderr()
    assert "ln: net dev 0 features 4000 slot 0\n" in a.text
    assert "ln: net dev 0 features 4001 slot 1\n" in b.text
    assert "ln: sent 64 bytes to slot 1\n" in a.text and "ln: sent 64 bytes to slot 0\n" in b.text
    assert "ln: received 64 bytes [hello from slot 1]\n" in a.text
    assert "ln: received 64 bytes [hello from slot 0]\n" in b.text
    st = net.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 4096


def test_sharenet_slots_are_locked(run, ln_console, tmp_path):
    net = tmp_path / "shared.net"
    a = run(f"--sharenet={net}", 4, ln_console)
    a.expect("ln: ready")
    assert "ln: dev 0 type 2 features 4000 pages 1 pfn 401" in a.text
    fd = os.open(net, os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
        assert e.value.errno in (errno.EAGAIN, errno.EACCES)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1, os.SEEK_SET)   # we take slot 1
        b = run(f"--sharenet={net}", 4, ln_console)
        b.expect("ln: ready")
        assert "ln: dev 0 type 2 features 4002 pages 1 pfn 401" in b.text
    finally:
        os.close(fd)
    for r in (a, b):
        r.type("quit\n")
        assert r.wait() == 0


def test_sharenet_existing_file_kept(run, ln_console, tmp_path):
    net = tmp_path / "existing.net"
    net.write_bytes(b"\x02\x00\x09\x09\x00\x00" + bytes(4090))
    net.chmod(0o640)
    r = run(f"--sharenet={net}", 4, ln_console)
    r.expect("ln: ready")
    r.type("quit\n")
    assert r.wait() == 0
    assert stat.S_IMODE(net.stat().st_mode) == 0o640            # not ours to change
    assert net.read_bytes()[:6] == b"\x02\x00\x09\x09\x00\x00"


# --- the bundled Guest OS over tunnet ---------------------------------------------------------

def test_ping_over_tunnet_with_bundled_guest(run, netns):
    try:
        from launcher.guest.bundled import bundled_guest
    except ImportError as e:
        pytest.skip(f"launcher.guest.bundled is missing ({e}): a full ping over --tunnet needs "
                    "the bundled Guest OS's network stack")
    kernel = bundled_guest()
    r = run("--tunnet=10.77.5.1", 32, kernel, "ip=10.77.5.2",
            prefix=("ip", "netns", "exec", netns))
    r.expect("lguest$ ", timeout=60)
    r.type("ping 10.77.5.1 3 100\n")
    r.expect("3 packets transmitted, 3 received, 0% packet loss", timeout=60)
    r.expect("lguest$ ", count=2, timeout=30)
    r.type("poweroff\n")
    assert r.wait(30) == 0, r.stderr()


def test_tap_device_gone(run, netns, ln_console):
    """Someone deletes the TAP device under a running Guest: the Launcher stops with one line,
    2.6.23's own "reading network" error, and status 1; nothing hangs."""
    r = run("--tunnet=10.77.6.1", 4, ln_console, prefix=("ip", "netns", "exec", netns),
            stdin=subprocess.DEVNULL)
    r.expect("ln: ready")
    ns_ip(netns, "link", "del", "tap0")
    assert r.wait(30) == 1
    err = r.stderr()
    assert err.splitlines()[-1].startswith("lguest: reading network: "), err
    assert "Traceback" not in err
