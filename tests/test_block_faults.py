"""The block device when the disk file goes wrong under a running Guest, through the real `lguest`
command and a Guest driven request by request from its console (tests/guests/blk_cmd.c):

- the file is truncated (from the host) while the Launcher runs;
- the file's filesystem starts failing every read and write with EIO.

Each failed request is result 2 for the Guest and one line on stderr saying why; the Guest keeps
running; what was written before the fault is in the file afterwards."""
import fcntl
import os
import re
import shutil
import subprocess

import pytest

from guestrun import build

pytestmark = pytest.mark.kvm
SECTOR = 512
DISK = 65536                          # 128 sectors


@pytest.fixture(scope="module")
def blk_cmd():
    return build("blk_cmd.c")


def request(r, line):
    """Type one command; return the Guest's one-line answer."""
    n = r.text.count("\n")
    r.type(line + "\n")
    r.expect("\n", count=n + 1)
    answer = r.text.splitlines()[n]
    assert answer.startswith("blk: "), (answer, r.stderr())
    return answer[len("blk: "):]


def start(run, disk, blk_cmd):
    r = run(f"--block={disk}", 4, blk_cmd)
    r.expect("blk: ready, %d sectors\n" % (DISK // SECTOR))
    return r


def quit_(r):
    r.type("quit\n")
    assert r.wait() == 0, r.stderr()
    assert "blk: bye" in r.text


def stderr_lines(r):
    err = r.stderr()
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.splitlines()
    assert all(line.startswith("lguest: block") for line in lines), lines
    return lines


def sector(data, n):
    return data[n * SECTOR:(n + 1) * SECTOR]


# --- the file truncated while in use -------------------------------------------------------------

def test_block_file_truncated_while_in_use(run, blk_cmd, tmp_path):
    """Half the file cut off under the Guest.  Reads past the new end fail (result 2, none of the
    buffer touched beyond what the file still had) and say why; reads below it still work; a write
    past the new end but inside the disk extends the file again (saying so), and a write past the
    disk is refused as always, so the file never grows beyond the size it had at start.  The
    Guest's reply buffer is filled with 0xcc before each read, so a read that fails shows it
    untouched: no zeros passed off as data."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xee" * DISK)
    r = start(run, disk, blk_cmd)
    assert request(r, "w 2 1 aa") == "w 2 1 -> 1"
    assert request(r, "w 120 2 bb") == "w 120 2 -> 1"               # near the end
    assert request(r, "r 120 2") == "r 120 2 -> 1 used 1024 bytes bb bb"
    assert stderr_lines(r) == []

    os.truncate(disk, DISK // 2)                                   # 64 sectors left
    assert request(r, "r 120 2") == "r 120 2 -> 2 used 0 bytes cc cc"
    # Across the new end: the half still in the file is read, and said to be all there is.  (What
    # the rest of the buffer holds is not promised: ext4's O_DIRECT zeroes it, buffered I/O not.)
    assert request(r, "r 63 2").startswith("r 63 2 -> 2 used 512 bytes ee ")
    assert request(r, "r 2 1") == "r 2 1 -> 1 used 512 bytes aa aa"     # below it: still there
    err = stderr_lines(r)
    assert err == [
        "lguest: block: read of sector 120: beyond the end of %s, now 32768 bytes (truncated "
        "while in use?): 0 of 1024 bytes" % disk,
        "lguest: block: read of sector 63: beyond the end of %s, now 32768 bytes (truncated "
        "while in use?): 512 of 1024 bytes" % disk], err

    assert request(r, "w 100 1 dd") == "w 100 1 -> 1"              # inside the disk: done
    assert os.path.getsize(disk) == 101 * SECTOR
    assert request(r, "r 100 1") == "r 100 1 -> 1 used 512 bytes dd dd"
    assert request(r, "r 80 1") == "r 80 1 -> 1 used 512 bytes 0 0"     # the hole, as said
    assert request(r, "w 127 1 ff") == "w 127 1 -> 1"              # the disk's last sector
    assert request(r, "w 128 1 ff") == "w 128 1 -> 2"              # past the disk: refused
    assert request(r, "r 127 1") == "r 127 1 -> 1 used 512 bytes ff ff"
    quit_(r)
    err = stderr_lines(r)[2:]
    assert err == [
        "lguest: block: write of sector 100: beyond the end of %s, now 32768 bytes (truncated "
        "while in use?): writing it extends the file, bytes 32768..51199 read as zeros" % disk,
        "lguest: block: write of sector 127: beyond the end of %s, now 51712 bytes (truncated "
        "while in use?): writing it extends the file, bytes 51712..65023 read as zeros" % disk], err

    data = disk.read_bytes()
    assert len(data) == DISK
    assert sector(data, 0) == b"\xee" * SECTOR and sector(data, 63) == b"\xee" * SECTOR
    assert sector(data, 2) == b"\xaa" * SECTOR
    assert data[64 * SECTOR:100 * SECTOR] == bytes(36 * SECTOR)
    assert sector(data, 100) == b"\xdd" * SECTOR
    assert data[101 * SECTOR:127 * SECTOR] == bytes(26 * SECTOR)
    assert sector(data, 127) == b"\xff" * SECTOR


def test_block_file_truncated_to_nothing(run, blk_cmd, tmp_path):
    """Every read fails, the Guest carries on, and the Launcher still powers off cleanly."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xee" * DISK)
    r = start(run, disk, blk_cmd)
    os.truncate(disk, 0)
    for s in (0, 64, 127):
        assert request(r, "r %d 1" % s) == "r %d 1 -> 2 used 0 bytes cc cc" % s
    quit_(r)
    assert len(stderr_lines(r)) == 3
    assert disk.read_bytes() == b""


# --- EIO -----------------------------------------------------------------------------------------
#
# Real EIO from the kernel.  Device-mapper's `error` target would give a disk with a bad region,
# but it needs CONFIG_BLK_DEV_DM, which kernels without CONFIG_MD (like this project's test
# machines) lack.  So: an ext4 filesystem on a loop device, shut down with EXT4_IOC_SHUTDOWN
# while the Launcher runs; from then on every read and write of the file fails with EIO, from the
# filesystem itself.  Data written before is on the loop device and is still there after the
# filesystem is mounted again.

EXT4_IOC_SHUTDOWN = 0x8004587D        # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_DEFAULT = 0          # sync first, then shut down


def _run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def _unavailable(why):
    """Skip where the machine cannot do it; under LGUEST_REQUIRE_KVM=1 (CI, as root, with the
    tools .ci/run installs) that is a failure, not a silent skip."""
    if os.environ.get("LGUEST_REQUIRE_KVM") == "1":
        pytest.fail(f"{why}, and LGUEST_REQUIRE_KVM=1 requires it", pytrace=False)
    pytest.skip(why)


@pytest.fixture
def ext4_on_loop(tmp_path):
    """An ext4 filesystem of 16 MB on a loop device, mounted at tmp_path/fs; yields
    (mount point, remount): remount() unmounts and mounts it again.  Everything is unmounted and
    the loop device detached afterwards, whatever happened."""
    if os.getuid() != 0:
        pytest.skip("needs root to attach a loop device and mount a filesystem")
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            _unavailable(f"needs {tool} (e2fsprogs, util-linux)")
    img, mnt = tmp_path / "ext4.img", tmp_path / "fs"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    r = _run("mkfs.ext4", "-q", "-F", str(img))
    if r.returncode:
        _unavailable("mkfs.ext4 failed: " + r.stderr.strip())
    r = _run("losetup", "--find", "--show", str(img))
    if r.returncode:
        _unavailable("no loop device here: " + r.stderr.strip())
    loop = r.stdout.strip()
    mounted = []

    def mount():
        r = _run("mount", "-t", "ext4", loop, str(mnt))
        if r.returncode:
            _unavailable("cannot mount ext4 here: " + r.stderr.strip())
        mounted.append(True)

    def umount():
        if mounted:
            r = _run("umount", str(mnt))
            if r.returncode:
                _run("umount", "-l", str(mnt))
            mounted.clear()

    def remount():
        umount()
        mount()

    try:
        mount()
        yield mnt, remount
    finally:
        umount()
        _run("losetup", "-d", loop)


def shut_down(mnt):
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, EXT4_GOING_FLAGS_DEFAULT.to_bytes(4, "little"))
    finally:
        os.close(fd)


def test_block_reads_and_writes_failing_with_eio(run, blk_cmd, ext4_on_loop):
    mnt, remount = ext4_on_loop
    disk = mnt / "disk.img"
    disk.write_bytes(b"\xee" * DISK)
    r = start(run, disk, blk_cmd)
    assert request(r, "w 2 1 aa") == "w 2 1 -> 1"
    assert request(r, "w 120 2 bb") == "w 120 2 -> 1"
    assert request(r, "r 2 1") == "r 2 1 -> 1 used 512 bytes aa aa"

    shut_down(mnt)
    assert request(r, "r 2 1") == "r 2 1 -> 2 used 0 bytes cc cc"
    assert request(r, "w 4 1 dd") == "w 4 1 -> 2"
    assert request(r, "r 120 2") == "r 120 2 -> 2 used 0 bytes cc cc"
    assert request(r, "w 2 1 dd") == "w 2 1 -> 2"
    quit_(r)                                       # the Guest kept running to the end
    assert stderr_lines(r) == ["lguest: block %s: %s: Input/output error" % (disk, what)
                               for what in ("read of sector 2", "write of sector 4",
                                            "read of sector 120", "write of sector 2")]

    remount()
    data = disk.read_bytes()
    assert len(data) == DISK
    assert sector(data, 2) == b"\xaa" * SECTOR                 # written before: kept
    assert data[120 * SECTOR:122 * SECTOR] == b"\xbb" * 2 * SECTOR
    assert sector(data, 4) == b"\xee" * SECTOR                 # refused: untouched
    assert re.fullmatch(b"\xee+", data[:2 * SECTOR])
