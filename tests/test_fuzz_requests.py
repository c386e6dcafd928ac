"""Random requests at the /dev/lguest interface (hypothesis): random byte strings, request words
with random arguments, INITIALIZE requests that describe a runnable Guest in memory full of random
bytes, reads of random sizes and a close() anywhere.  Every call must return a value or raise
OSError with an errno 2.6.23 could give (EBADF once closed); never another exception, never a hang
(a read runs whatever Guest the last INITIALIZE described, and a BREAK from another thread ends one
that spins without exits); and the Host must still work afterwards."""
import errno
import mmap
import random
import signal
import struct
import threading

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import lguest_kvm
from launcher import loader
from lguest_kvm import abi

pytestmark = pytest.mark.kvm
ALLOWED = {errno.EINVAL, errno.EBUSY, errno.ENOSPC, errno.ENOENT, errno.EPERM, errno.EFAULT,
           errno.EAGAIN, errno.EINTR, errno.EBADF}
PAGES = 64
EXAMPLES = 400
words = st.integers(min_value=0, max_value=0xFFFFFFFF)
request = st.one_of(
    st.binary(max_size=24),
    st.builds(lambda r, args: struct.pack("<I", r) + b"".join(struct.pack("<I", a) for a in args),
              st.integers(min_value=0, max_value=5), st.lists(words, max_size=5)),
    # A Guest that can start: pfn_limit inside the buffer, the entry point in it, and either the
    # page directory the Launcher would build (None) or any page.
    st.tuples(st.just("init"), st.integers(1, PAGES), st.one_of(st.none(), st.integers(0, PAGES - 1)),
              st.integers(0, PAGES * 4096 - 1)),
)
op = st.one_of(request, st.integers(min_value=-1, max_value=64), st.just("close"))


@pytest.fixture(autouse=True)
def private_ids(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LGUEST_KVM_IDDIR", str(tmp_path_factory.mktemp("ids")))


@pytest.fixture(autouse=True)
def watchdog():
    """A Host that hangs fails the test instead of the run."""
    def expired(signum, frame):
        raise AssertionError("a request did not return within 60 s")
    old = signal.signal(signal.SIGALRM, expired)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def read_with_break(lg, size):
    """read(), with a BREAK from another thread after 1 s: a random Guest may loop without exits."""
    def stop():
        try:
            lg.write(struct.pack("<II", abi.LHREQ_BREAK, 1))
        except OSError:
            pass
    t = threading.Timer(1, stop)
    t.start()
    try:
        return lg.read(size)
    finally:
        t.cancel()
        while t.is_alive():                             # release a BREAK that fired meanwhile
            g = lg.guest
            if g is not None and g.break_out:
                try:
                    lg.write(struct.pack("<II", abi.LHREQ_BREAK, 0))
                except OSError:
                    pass
            t.join(0.05)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(op, max_size=8), st.integers(0, 2 ** 32 - 1), st.booleans(),
       st.integers(0, PAGES * 4096 - 1))
def test_random_request_sequences(ops, seed, boot_first, start):
    if boot_first:                 # half the sequences run a random Guest on good page tables first
        ops = [("init", PAGES, None, start), 8, 8, 8] + ops
    mem = mmap.mmap(-1, PAGES * 4096)
    mem[:] = random.Random(seed).randbytes(PAGES * 4096)        # random code, random tables
    pgdir = loader.setup_pagetables(mem, (PAGES - 4) * 4096, 0, 0xC0000000)
    lg = lguest_kvm.open(mem)
    signal.alarm(60)
    try:
        for o in ops:
            if isinstance(o, tuple):
                _, pfn, page, start = o
                o = struct.pack("<5I", abi.LHREQ_INITIALIZE, pfn, pgdir if page is None else page * 4096,
                                0xC0000000 + start, 0xC0000000)
            try:
                if o == "close":
                    lg.close()
                elif isinstance(o, int):
                    r = read_with_break(lg, o)
                    assert isinstance(r, bytes)
                    g = lg.guest
                    event("read: Guest dead: " + g.dead.split(" 0x")[0] if g and g.dead
                          else "read: %d bytes" % len(r))
                elif o[:4] == struct.pack("<I", abi.LHREQ_BREAK) and o[4:8].strip(b"\0"):
                    # BREAK "on" waits, as 2.6.23's did, until someone writes "off": here, a
                    # rescuer in another thread, as the Launcher would be for its Waker.
                    rescue = threading.Timer(0.2, lambda: lg.write(struct.pack("<II", abi.LHREQ_BREAK, 0)))
                    rescue.start()
                    try:
                        assert lg.write(o) == 0
                    finally:
                        rescue.cancel()
                        rescue.join()
                else:
                    assert isinstance(lg.write(o), int)
            except OSError as e:
                assert e.errno in ALLOWED, e
                event("%s: %s" % ("read" if isinstance(o, int) else "write", errno.errorcode[e.errno]))
            g = lg.guest
            if g is not None and g.dead is None and g.halted and g.timer_deadline is None:
                break                                   # halted with no timer: nothing to see
    finally:
        signal.alarm(0)
        lg.close()
    # The Host is still fine: a fresh device opens, and a closed one says so.
    with pytest.raises(OSError) as e:
        lg.read(8)
    assert e.value.errno == errno.EBADF
