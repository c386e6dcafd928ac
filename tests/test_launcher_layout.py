"""The Guest-physical layout the Launcher builds (abi §8.2, §8.3), checked without a Guest."""
import os
import stat
import struct
import sys
from pathlib import Path

import pytest

import lguest_kvm
from launcher import main as lmain
from launcher.devices import Device, DeviceList, InvalidAddress, PAGE_SIZE

sys.path.insert(0, str(Path(__file__).parent))
from guestrun import build   # noqa: E402

MB = 1 << 20
DESC = struct.Struct("<HHHHI")


class Fake(Device):
    name = "fake"


def test_descriptor_page_and_device_pages():
    mem = 4 * MB
    buf = lguest_kvm.guest_memory(mem + 5 * PAGE_SIZE)
    buf[mem:mem + 8] = b"garbage!"                      # the descriptor page starts zeroed
    dl = DeviceList(buf, mem)
    assert dl.top == mem + PAGE_SIZE
    a = Fake(dl, 7, num_pages=2, features=0x1234, watch_off=8)
    b = Fake(dl, 9)
    c = Fake(dl, 3, num_pages=1, features=0x8000)
    assert (a.index, a.irq, a.page, a.watch_key) == (0, 1, mem + PAGE_SIZE, mem + PAGE_SIZE + 8)
    assert (b.index, b.irq, b.page, b.watch_key) == (1, 2, None, 0)
    assert (c.index, c.irq, c.page) == (2, 3, mem + 3 * PAGE_SIZE)
    assert dl.top == mem + 4 * PAGE_SIZE
    raw = bytes(buf[mem:mem + PAGE_SIZE])
    assert DESC.unpack_from(raw, 0) == (7, 0x1234, 0, 2, (mem + PAGE_SIZE) // PAGE_SIZE)
    assert DESC.unpack_from(raw, 12) == (9, 0, 0, 0, 0)
    assert DESC.unpack_from(raw, 24) == (3, 0x8000, 0, 1, (mem + 3 * PAGE_SIZE) // PAGE_SIZE)
    assert not any(raw[36:])
    for _ in range(13):
        Fake(dl, 1)
    with pytest.raises(ValueError, match="too many devices"):
        Fake(dl, 1)
    dl.close()


def test_dma_sections_are_checked_against_top():
    mem = 2 * MB
    buf = lguest_kvm.guest_memory(mem + 2 * PAGE_SIZE)
    dl = DeviceList(buf, mem)
    Fake(dl, 1, num_pages=1)
    top = dl.top
    dma = 0x3000
    struct.pack_into("<I3I13I3H13H", buf, dma, 0, 0x5000, 0x6000, top - 11, *[0] * 13,
                     4, 8, 10, *[0] * 13)
    assert dl.dma_sections(dma) == [(0x5000, 4), (0x6000, 8), (top - 11, 10)]
    assert [bytes(v) for v in dl.dma_iov(dma)] == [bytes(4), bytes(8), bytes(10)]
    struct.pack_into("<H", buf, dma + 68 + 4, 11)       # addr + size == top: refused (2.6.23)
    with pytest.raises(InvalidAddress):
        dl.dma_sections(dma)
    with pytest.raises(InvalidAddress):
        dl.dma_sections(top - 100)                      # the struct itself must be below top
    dl.set_used_len(dma, 77)
    assert dl.used_len(dma) == 77
    dl.close()


def test_dma_buffers_merge_consecutive_sections_and_check_them_all():
    mem = 2 * MB
    buf = lguest_kvm.guest_memory(mem + 2 * PAGE_SIZE)
    dl = DeviceList(buf, mem)
    top = dl.top
    dma = 0x3000
    dma_at = struct.Struct("<I16I16H")

    def put(*sections):
        addrs = [a for a, _ in sections] + [0] * (16 - len(sections))
        lens = [n for _, n in sections] + [0] * (16 - len(sections))
        dma_at.pack_into(buf, dma, 0, *addrs, *lens)
        return dl.dma_buffers(dma)

    for i in range(16 * PAGE_SIZE):
        buf[0x10000 + i] = i % 251
    iov, total, bits = put(*[(0x10000 + i * PAGE_SIZE, PAGE_SIZE) for i in range(16)])
    assert len(iov) == 1 and total == 16 * PAGE_SIZE and not bits % PAGE_SIZE
    assert bytes(iov[0]) == bytes(buf[0x10000:0x20000])
    iov, total, bits = put((0x10000, 100), (0x10064, 412))        # consecutive, odd lengths
    assert [len(b) for b in iov] == [512] and total == 512 and bits % 512 == 0
    iov, total, bits = put((0x10000, 512), (0x12000, 100), (0x11000, 4))
    assert [bytes(b) for b in iov] == [bytes(buf[0x10000:0x10200]), bytes(buf[0x12000:0x12064]),
                                       bytes(buf[0x11000:0x11004])]
    assert total == 616 and bits & 3 == 0 and bits & 511
    assert put() == ([], 0, 0)
    assert put((0x10000, 8), (0, 0), (0x11000, 8))[1] == 8           # a zero length ends the list
    for bad in [((top - 11, 11),), ((0x10000, 8), (top, 4)),
                ((top - 16, 8), (top - 8, 8))]:                       # merged or not, below top
        with pytest.raises(InvalidAddress):
            put(*bad)
    with pytest.raises(InvalidAddress):
        dl.dma_buffers(top - 100)
    dl.close()


@pytest.fixture(scope="module")
def ln_console():
    return build("ln_console.c")


def test_full_layout(tmp_path, ln_console):
    disk_a, disk_b = tmp_path / "a.img", tmp_path / "b.img"
    disk_a.write_bytes(bytes(64 * 512))
    disk_b.write_bytes(bytes(10 * 512 + 100))
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"INITRD" * 1000)                # 6000 bytes: 2 pages
    net = tmp_path / "net"
    opts = lmain.parse_args([f"--block={disk_a}", f"--sharenet={net}", "8", str(ln_console),
                             f"--initrd={initrd}", f"--block={disk_b}", "root=x", "quiet"])
    L = lmain.Launcher(opts)
    old = os.umask(0)                                   # a lax umask: the net file stays 0600
    try:
        L.setup()
        L.create_devices()
        os.umask(old)
        mem = 8 * MB
        m = L.memory
        top = mem + 4 * PAGE_SIZE
        assert (L.mem, L.top, len(m)) == (mem, top, top)
        # descriptors: option order, the console last
        descs = [DESC.unpack_from(m, mem + 12 * i) for i in range(5)]
        first = mem // PAGE_SIZE + 1
        assert descs[0] == (3, 0x8000, 0, 1, first)
        assert descs[1] == (2, 0x4000 | 0, 0, 1, first + 1)            # slot 0, NOCSUM
        assert descs[2] == (3, 0x8000, 0, 1, first + 2)
        assert descs[3] == (1, 0, 0, 0, 0)
        assert descs[4] == (0, 0, 0, 0, 0)
        assert [d.irq for d in L.devices.devices] == [1, 2, 3, 4]
        assert [d.watch_key for d in L.devices.devices] == [first * 4096, (first + 1) * 4096,
                                                             (first + 2) * 4096, 0]
        # block pages: num_sectors; the other fields zero
        assert struct.unpack_from("<iIIiI", m, first * 4096) == (0, 0, 0, 0, 64)
        assert struct.unpack_from("<iIIiI", m, (first + 2) * 4096) == (0, 0, 0, 0, 10)
        # the sharenet page is the file's page
        m[(first + 1) * 4096:(first + 1) * 4096 + 6] = b"\x02\x00\x01\x02\x03\x04"
        assert net.read_bytes()[:6] == b"\x02\x00\x01\x02\x03\x04"
        assert stat.S_IMODE(net.stat().st_mode) == 0o600 and net.stat().st_size == 4096
        # pfn_limit covers RAM, the descriptor page and the device pages
        assert L.top // PAGE_SIZE == first + 3
        # boot params, command line, initrd at the top, page tables below it
        assert m[0x1E8] == 1
        assert struct.unpack_from("<QQI", m, 0x2D0) == (0, mem, 1)
        assert struct.unpack_from("<I", m, 0x228)[0] == 0x1000
        assert m[0x1000:0x1000 + 14] == b"root=x quiet \0"
        assert m[0x210] == 0xFF
        assert struct.unpack_from("<II", m, 0x218) == (mem - 8192, 8192)
        assert m[mem - 8192:mem - 8192 + 6000] == b"INITRD" * 1000
        assert L.pgdir == mem - 8192 - 4096
        pte0 = L.pgdir - 2 * 4096                      # 8 MB: 2048 pages, 2 PTE pages
        assert struct.unpack_from("<2I", m, L.pgdir + 768 * 4) == (pte0 | 7, (pte0 + 4096) | 7)
        assert struct.unpack_from("<I", m, pte0 + 4 * 5)[0] == (5 << 12) | 7
        # the kernel: "GenuineLguest" right before the entry point
        e = L.entry - L.page_offset
        assert L.page_offset == 0xC0000000 and m[e - 13:e] == b"GenuineLguest"
    finally:
        os.umask(old)
        L.close()


def test_bad_block_file_is_fatal_one_line(tmp_path, ln_console):
    L = lmain.Launcher(lmain.parse_args([f"--block={tmp_path / 'missing.img'}", "4",
                                         str(ln_console)]))
    try:
        L.setup()
        with pytest.raises(lmain.Fatal) as e:
            L.create_devices()
        assert str(e.value) == f"cannot open block file {tmp_path / 'missing.img'}: " \
                               "No such file or directory"
    finally:
        L.close()


def test_sharenet_slots_in_one_process(tmp_path, ln_console):
    net = tmp_path / "net"
    L = lmain.Launcher(lmain.parse_args([f"--sharenet={net}", f"--sharenet={net}", "4",
                                         str(ln_console)]))
    try:
        L.setup()
        L.create_devices()
        assert [d.features for d in L.devices.devices[:2]] == [0x4000, 0x4001]
    finally:
        L.close()
