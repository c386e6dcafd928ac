"""Permissions: what the project creates is its owner's alone, and a second user's process cannot
reach a Guest's rendezvous (the registry saying where Guest memory lives, the memory itself, a
--sharenet file).  The second user is created by the test, when it runs as root (as in CI)."""
import errno
import json
import os
import pwd
import stat
import subprocess
import uuid

import pytest

import guestrun
from lguest_kvm import hostwide, memory
from launcher import net

pytestmark = pytest.mark.kvm
PROBE = r"""
import json, os, sys
out = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        os.close(os.open(path, os.O_RDWR))
        out[name] = 0
    except OSError as e:
        out[name] = e.errno
print(json.dumps(out))
"""


@pytest.fixture
def iddir(tmp_path, monkeypatch):
    d = tmp_path / "ids"
    monkeypatch.setenv("LGUEST_KVM_IDDIR", str(d))
    return d


def test_what_the_host_creates_is_owner_only(iddir, tmp_path):
    with guestrun.Booted(guestrun.build("hc.c", cflags=("-DMODE=2",)), memfd=True) as g:
        g.run()
        reg = os.stat(iddir / ("dma-registry-%d" % os.getuid()))
        assert stat.S_IMODE(reg.st_mode) == 0o600 and reg.st_uid == os.getuid()
    d = os.stat(iddir)
    assert stat.S_IMODE(d.st_mode) == 0o1777            # shared like /tmp: sticky
    fd = net._open_net_file(str(tmp_path / "net"))
    try:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    finally:
        os.close(fd)


def test_a_planted_registry_is_refused(iddir):
    """A registry file that is a symbolic link (or, below, another user's file) is not used."""
    iddir.mkdir(mode=0o1777)
    (iddir / ("dma-registry-%d" % os.getuid())).symlink_to("/dev/null")
    hostwide._registries.clear()
    with pytest.raises(OSError) as e:
        hostwide.Registry()
    assert e.value.errno in (errno.ELOOP, errno.EPERM)


@pytest.fixture
def other_user():
    """A user made for this test (root only), removed afterwards."""
    if os.getuid() != 0:
        pytest.skip("needs root to create a second user")
    name = "lgt" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def as_user(user, paths):
    """Try to open each path read-write as `user`: {name: errno or 0}."""
    def drop():
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    r = subprocess.run(["/usr/bin/python3", "-c", PROBE, json.dumps(paths)], preexec_fn=drop,
                       capture_output=True, text=True, cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_second_user_cannot_reach_a_guest(iddir, tmp_path, other_user):
    os.chmod(tmp_path, 0o755)                           # let the other user see the files at all
    netfile = tmp_path / "net"
    os.close(net._open_net_file(str(netfile)))
    with guestrun.Booted(guestrun.build("hc.c", cflags=("-DMODE=2",)), memfd=True) as g:
        memfd = memory.memfd_of(g.mem)[0]
        os.chmod(iddir, 0o1777)
        got = as_user(other_user, {
            "registry": str(iddir / ("dma-registry-%d" % os.getuid())),
            "guest memory": "/proc/%d/fd/%d" % (os.getpid(), memfd),
            "sharenet file": str(netfile)})
        g.run()
    assert got == {"registry": errno.EACCES, "guest memory": errno.EACCES,
                   "sharenet file": errno.EACCES}, got


def test_another_users_registry_file_is_refused(iddir, other_user):
    """A user who plants the registry file of root in the shared directory gets root's Host to
    refuse it, not to trust it."""
    iddir.mkdir()
    os.chmod(iddir, 0o1777)
    planted = iddir / ("dma-registry-%d" % os.getuid())
    planted.write_bytes(b"")
    os.chown(planted, other_user.pw_uid, other_user.pw_gid)
    os.chmod(planted, 0o666)
    hostwide._registries.clear()
    with pytest.raises(OSError) as e:
        hostwide.Registry()
    assert e.value.errno == errno.EPERM and "not a file of ours" in str(e.value)
