"""The /dev/lguest interface: requests, errnos, ownership and Guest ids, as 2.6.23 answered them."""
import errno
import mmap
import os
import signal
import struct
import threading
import time

import pytest

import lguest_kvm
from lguest_kvm import abi
import guestrun

pytestmark = pytest.mark.kvm


def req(*words):
    return struct.pack("<%dI" % len(words), *words)


@pytest.fixture(autouse=True)
def private_ids(tmp_path, monkeypatch):
    """Guest ids come from lock files; give each test its own set so tests cannot disturb each other."""
    monkeypatch.setenv("LGUEST_KVM_IDDIR", str(tmp_path / "ids"))


@pytest.fixture
def dev():
    mem = mmap.mmap(-1, 64 * 4096)
    lg = lguest_kvm.open(mem)
    yield lg
    lg.close()


def initialize(lg, pfn_limit=64, pgdir=0, start=0xC0000000, page_offset=0xC0000000):
    return lg.write(req(abi.LHREQ_INITIALIZE, pfn_limit, pgdir, start, page_offset))


def expect_errno(code, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, e.value
    return e.value


def test_initialize_returns_16_and_only_once(dev):
    assert initialize(dev) == 16
    expect_errno(errno.EBUSY, initialize, dev)


def test_requests_before_initialize_are_einval(dev):
    expect_errno(errno.EINVAL, dev.write, req(abi.LHREQ_IRQ, 1))
    expect_errno(errno.EINVAL, dev.write, req(abi.LHREQ_GETDMA, 0))
    expect_errno(errno.EINVAL, dev.write, req(abi.LHREQ_BREAK, 0))
    expect_errno(errno.EINVAL, dev.read, 8)


def test_short_writes_are_efault(dev):
    expect_errno(errno.EFAULT, dev.write, b"")
    expect_errno(errno.EFAULT, dev.write, b"\0\0")
    expect_errno(errno.EFAULT, dev.write, req(abi.LHREQ_INITIALIZE, 1, 2, 3))
    assert initialize(dev) == 16
    expect_errno(errno.EFAULT, dev.write, req(abi.LHREQ_IRQ))


def test_unknown_request_and_bad_irq(dev):
    initialize(dev)
    expect_errno(errno.EINVAL, dev.write, req(7, 0))
    expect_errno(errno.EINVAL, dev.write, req(abi.LHREQ_IRQ, 32))
    assert dev.write(req(abi.LHREQ_IRQ, 31)) == 0
    assert dev.guest.irqs_pending == 1 << 31


def test_page_offset_in_switcher_range_is_einval(dev):
    expect_errno(errno.EINVAL, initialize, dev, 64, 0, 0, 0xFFC00000)
    assert initialize(dev, page_offset=0xFF800000) == 16


def test_getdma_with_nothing_bound_is_enoent(dev):
    initialize(dev)
    expect_errno(errno.ENOENT, dev.write, req(abi.LHREQ_GETDMA, 0x1000))


def test_other_threads_get_eperm_except_break(dev):
    initialize(dev)
    results = {}

    def other():
        for name, fn in (("read", lambda: dev.read(8)), ("irq", lambda: dev.write(req(abi.LHREQ_IRQ, 1)))):
            try:
                fn()
            except OSError as e:
                results[name] = e.errno
        results["break_off"] = dev.write(req(abi.LHREQ_BREAK, 0))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert results == {"read": errno.EPERM, "irq": errno.EPERM, "break_off": 0}


def test_readonly_memory_is_refused():
    expect_errno(errno.EFAULT, lguest_kvm.open, b"\0" * 4096)


# Guest ids: 16 slots for the whole host, whatever process holds them.
def test_seventeenth_guest_gets_enospc():
    mems, devs = [], []
    try:
        for i in range(abi.MAX_LGUEST_GUESTS):
            mems.append(mmap.mmap(-1, 16 * 4096))
            devs.append(lguest_kvm.open(mems[-1]))
            initialize(devs[-1], pfn_limit=16)
        assert sorted(d.guest.guestid for d in devs) == list(range(16))
        extra = lguest_kvm.open(mmap.mmap(-1, 16 * 4096))
        expect_errno(errno.ENOSPC, initialize, extra, 16)
        freed = devs.pop(5)
        freed.close()
        assert initialize(extra, pfn_limit=16) == 16
        assert extra.guest.guestid == 5
        devs.append(extra)
    finally:
        for d in devs:
            d.close()


def test_ids_are_unique_across_processes_and_freed_when_a_process_dies():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            lg = lguest_kvm.open(mmap.mmap(-1, 16 * 4096))
            initialize(lg, pfn_limit=16)
            os.write(w, bytes([lg.guest.guestid]))
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    child_id = os.read(r, 1)[0]
    os.close(r)
    try:
        lg = lguest_kvm.open(mmap.mmap(-1, 16 * 4096))
        initialize(lg, pfn_limit=16)
        assert lg.guest.guestid != child_id
        lg.close()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    lg = lguest_kvm.open(mmap.mmap(-1, 16 * 4096))
    initialize(lg, pfn_limit=16)
    assert lg.guest.guestid == 0          # the dead process's id is free again
    lg.close()


# A dead Guest: read() returns its reason, write() says ENOENT; the device closes and reopens.
CRASHER = ("crash.c", '#include "lguest.h"\nint main(void) { lguest_init(); '
           'lguest_crash("the end of a short life"); return 0; }\n')


def test_death_message_and_enoent():
    g = guestrun.Booted(guestrun.build(CRASHER))
    try:
        expect_errno(errno.ENOENT, g.lg.read, 8)
        msg = b"CRASH: the end of a short life\0"
        assert g.lg.read(1024) == msg
        assert g.lg.read(5) == msg[:5]
        assert g.lg.read(0) == b""
        expect_errno(errno.ENOENT, g.lg.write, req(abi.LHREQ_IRQ, 1))
        expect_errno(errno.ENOENT, g.lg.write, req(abi.LHREQ_GETDMA, 0))
    finally:
        g.close()
    why, _, _ = guestrun.run_guest(CRASHER)
    assert why == "CRASH: the end of a short life"


def test_close_is_idempotent_and_a_context_manager():
    mem = mmap.mmap(-1, 16 * 4096)
    with lguest_kvm.open(mem) as lg:
        initialize(lg, pfn_limit=16)
    lg.close()
    assert lg.guest is None
    with lguest_kvm.open(mem) as lg2:           # the same memory can back a new Guest
        assert initialize(lg2, pfn_limit=16) == 16


def test_kind_is_reported(dev):
    assert dev.kind == lguest_kvm.kvm_kind()
