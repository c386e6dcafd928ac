"""2.6.23's DMA model (abi §4) on Guests that really run: BIND_DMA, the Launcher's GETDMA, SEND_DMA
to a shared key from one Guest to another, and every kill on the way, each on the right Guest.

The Guests are tests/guests/dma_io.c.  Two or three of them share one page of a file, mapped at
0x400000 in each (the --sharenet page), so a key there is the same key in all of them.  Each Guest
is initialized and run by its own thread, as each Launcher would be; the order of events between
them is set by "asks" (a SEND_DMA to a private key the test answers, see dma_io.c).
"""
import errno
import mmap
import os
import struct
import threading

import pytest

from lguest_kvm import abi, io
import guestrun

pytestmark = pytest.mark.kvm

ASK_KEY, PKEY, PKEY2 = 0x2000, 0x3000, 0x3004
SHARED = 0x400000
SKEY = SHARED + 0x100
WAIT_S = 20          # no step of these Guests takes more than a fraction of a second
READY, BOUND, WAIT, SENT, UNBOUND, WAIT2, READY2 = range(1, 8)


@pytest.fixture(scope="module", autouse=True)
def private_iddir(tmp_path_factory):
    """Our own Guest ids and registry, so that Guests of other test runs on this host don't count."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LGUEST_KVM_IDDIR", str(tmp_path_factory.mktemp("ids")))
        yield


def req(*words):
    return struct.pack("<%dI" % len(words), *words)


def image(mode, *flags):
    return guestrun.build("dma_io.c", cflags=(f"-DMODE={mode}", *(f"-D{f}" for f in flags)))


def u32(mem, gpa):
    return struct.unpack_from("<I", mem, gpa)[0]


# ---- one Guest -------------------------------------------------------------------------------

def run_one(mode, *flags, on_ask=None, **boot):
    """Run a single Guest to its death: (death message, console text, Booted, DMAs seen)."""
    g = guestrun.Booted(image(mode, *flags), **boot)
    others = []

    def on_dma(b, dma, key):
        if key == ASK_KEY:
            d = abi.lguest_dma.from_buffer(b.mem, dma)
            r = on_ask(b, d.addr[0], d.addr[1]) if on_ask else None
            b.set_used_len(dma, r or 0)
        else:
            others.append((dma, key))
    try:
        why = drive(g, on_dma)
    finally:
        g.close()
    return why, g.text, g, others


def drive(g, on_dma):
    """Booted.run(), for a Launcher whose own request (GETDMA) may kill the Guest: then the next
    read() returns the death message at once, which we tell from an 8-byte DMA record by its size."""
    while True:
        try:
            r = g.lg.read(4096)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
            r = g.lg.read(4096)
        if len(r) != 8:
            return r.rstrip(b"\0").decode("latin-1")
        dma, key = struct.unpack("<II", r)
        if key == abi.LGUEST_CONSOLE_DMA_KEY:
            data = b"".join(g.dma_sections(dma))
            g.output += data
            g.set_used_len(dma, len(data))
        else:
            on_dma(g, dma, key)


def test_bind_dma_return_values_and_bad_key():
    counts = []
    why, text, _, _ = run_one(1, on_ask=lambda b, tag, arg: counts.append(
        sum(1 for r in b.lg.guest.dma if r is not None)))
    assert text == ("bind=1 irq32=0 irq32_badkey=0 unbind_other=0 unbind=1 unbind_again=0 "
                    "bound=32 33rd=0 unbind=1 rebind=1\n")
    assert counts == [32]
    assert why == "bad dma key 0x3002"


def test_bind_dma_key_outside_launcher_memory():
    assert run_one(2)[0] == "bad dma key 0x402000"


def test_getdma_from_the_launcher():
    seen = {}

    def on_ask(b, tag, rx):
        lg = b.lg
        if tag == 1:
            with pytest.raises(OSError) as e:
                lg.write(req(abi.LHREQ_GETDMA, PKEY))
            seen["unbound"] = e.value.errno
        elif tag == 2:
            first = lg.write(req(abi.LHREQ_GETDMA, PKEY))
            irq = u32(b.mem, first)                       # the IRQ to raise, in used_len
            data_at = abi.lguest_dma.from_buffer(b.mem, first).addr[0]
            b.mem[data_at:data_at + 6] = b"hello\0"
            b.set_used_len(first, 5)
            lg.write(req(abi.LHREQ_IRQ, irq))
            order = [first]
            for _ in range(3):                            # GETDMA marks each one used (the IRQ)
                order.append(lg.write(req(abi.LHREQ_GETDMA, PKEY)))
            seen["order"] = [(a - rx) // 100 for a in order]
            seen["irq"], seen["last_used"] = irq, u32(b.mem, order[-1])
            with pytest.raises(OSError) as e:
                lg.write(req(abi.LHREQ_GETDMA, PKEY2))   # bound with num 0
            seen["num0"] = e.value.errno
        elif tag == 3:
            a = lg.write(req(abi.LHREQ_GETDMA, PKEY))
            seen["recent"] = ((a - rx) // 100, u32(b.mem, a))
        elif tag == 4:
            with pytest.raises(OSError) as e:
                lg.write(req(abi.LHREQ_GETDMA, PKEY + 1))
            seen["badkey"] = e.value.errno
        elif tag == 5:
            with pytest.raises(OSError) as e:
                lg.write(req(abi.LHREQ_GETDMA, PKEY))
            seen["unbound_again"] = e.value.errno
    why, text, _, _ = run_one(3, on_ask=on_ask)
    assert seen["unbound"] == errno.ENOENT
    assert seen["unbound_again"] == errno.ENOENT    # an unbind is seen at once
    assert seen["irq"] == 7
    assert seen["order"] == [0, 1, 2, 2]         # first free from index 0; the last when none is
    assert seen["last_used"] == 7
    assert seen["num0"] == errno.ENOENT
    assert text == "irq7=1 rx0=5:hello\n"        # the Launcher's buffer, and its interrupt
    assert seen["recent"] == (2, 4)              # the most recent binding of the key, its IRQ
    assert seen["badkey"] == errno.ENOENT
    assert why == "bad registered DMA buffer"


def test_getdma_array_outside_memory_kills():
    got = []
    why, text, _, _ = run_one(4, on_ask=lambda b, tag, arg: got.append(
        b.lg.write(req(abi.LHREQ_GETDMA, PKEY))))
    assert why == "bad read address 0x7ff000 len 100"
    assert text == ""


@pytest.fixture
def share_file(tmp_path):
    """One page of a file, to map MAP_SHARED at 0x400000 in each Guest."""
    fd = os.open(tmp_path / "sharenet", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, mmap.PAGESIZE)
    yield fd
    os.close(fd)


def test_shared_key_alone_reaches_nobody(share_file):
    why, text, _, others = run_one(5, memfd=True, share=[(SHARED, share_file, 0)])
    assert text == "nobody=1234 bind=1 self=1234 irq=0 rx0=0\n"   # used_len untouched both times
    assert others == []                                             # never to the Launcher
    assert why == "CRASH: Power down"


def test_bad_sending_dma_key_unaligned(share_file):
    why, text, _, others = run_one(6, memfd=True, share=[(SHARED, share_file, 0)])
    assert text == "used=0\n" and others == []
    assert why == "bad sending DMA key"


def test_sending_dma_key_beyond_pfn_limit_but_mapped_then_unmapped():
    why, text, g, others = run_one(7)
    # 0x401ffc is above pfn_limit but inside the Launcher's memory: a fine private key, which the
    # Launcher got from read(); 0x402000 is past the end of its memory.
    assert [k for _, k in others] == [0x401ffc]
    assert text == "beyond=0\n"
    assert why == "bad sending DMA key"


# ---- two or three Guests ---------------------------------------------------------------------

class World:
    """Guests in threads of this process, sharing a page, with events to order their steps."""

    def __init__(self, share_fd):
        self.fd = share_fd
        self.lock = threading.Lock()
        self.events = {}
        self.peers = []

    def event(self, name):
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def peer(self, name, mode, *flags, actions=None, **boot):
        p = Peer(self, name, image(mode, *flags), actions or {}, boot)
        self.peers.append(p)
        return p

    def run(self):
        for p in self.peers:
            p.thread.start()
        for p in self.peers:
            p.thread.join(WAIT_S * 2)
            assert not p.thread.is_alive(), "%s hung" % p.name
        for p in self.peers:
            if p.error:
                raise p.error
        return {p.name: p for p in self.peers}


class Peer:
    """One Guest and its Launcher thread.  actions: {tag: [("set"|"wait", event name) ...]}."""

    def __init__(self, world, name, img, actions, boot):
        self.world, self.name, self.image, self.actions, self.boot = world, name, img, actions, boot
        self.why, self.text, self.error, self.others = None, "", None, []
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self):
        g = None
        try:
            g = guestrun.Booted(self.image, memfd=True, share=[(SHARED, self.world.fd, 0)],
                                **self.boot)
            self.why = g.run(on_dma=self._on_dma)
            self.text = g.text
        except BaseException as e:                       # reported by World.run()
            self.error = e
            self.text = g.text if g else ""
        finally:
            if g is not None:
                g.close()
            self.world.event(self.name + ".dead").set()

    def _on_dma(self, b, dma, key):
        if key != ASK_KEY:
            self.others.append(key)
            return
        tag = abi.lguest_dma.from_buffer(b.mem, dma).addr[0]
        for kind, name in self.actions.get(tag, ()):
            ev = self.world.event(name)
            if kind == "set":
                ev.set()
            elif not ev.wait(WAIT_S):
                raise AssertionError("%s: waited in vain for %s" % (self.name, name))
        b.set_used_len(dma, 0)


def receiver_sender(world, r_flags=(), s_flags=(), r_boot=None, s_boot=None, s_mode=13):
    """The usual pair: R binds and waits until S is dead; S waits until R is bound, then sends."""
    world.peer("R", 12, *r_flags, actions={BOUND: [("set", "R.bound")], WAIT: [("wait", "S.dead")]},
               **(r_boot or {}))
    world.peer("S", s_mode, *s_flags, actions={READY: [("wait", "R.bound")]}, **(s_boot or {}))
    return world.run()


def test_guest_to_guest_copy_wakes_the_receiver(share_file):
    w = World(share_file)
    w.peer("R", 10, actions={BOUND: [("set", "R.bound")]})
    w.peer("S", 11, actions={READY: [("wait", "R.bound")]})
    p = w.run()
    assert p["S"].text == "used=13\n"                           # written into the sender
    # into the receiver: its length, both its sections, and its interrupt woke it from HALT
    assert p["R"].text == "bind=1\nwoke irq=1 timer=0 rx0=13:hello, guest\n"
    assert p["R"].why == p["S"].why == "CRASH: Power down"
    assert p["S"].others == []                                  # never seen by S's Launcher


def test_most_recent_receiver_and_never_the_sender(share_file):
    w = World(share_file)
    w.peer("R1", 12, "ROUNDS2", actions={BOUND: [("set", "R1.bound")], WAIT: [("wait", "S.sent")],
                                         WAIT2: [("set", "R1.printed"), ("wait", "S.dead")]})
    w.peer("R2", 12, "UNBIND", actions={READY: [("wait", "R1.bound")], BOUND: [("set", "R2.bound")],
                                        WAIT: [("wait", "S.sent")], UNBOUND: [("set", "R2.unbound")],
                                        WAIT2: [("wait", "S.dead")]})
    w.peer("S", 13, "SELF_BIND", "TWICE", actions={READY: [("wait", "R2.bound")],
                                                   SENT: [("set", "S.sent")],
                                                   READY2: [("wait", "R2.unbound"),
                                                            ("wait", "R1.printed")]})
    p = w.run()
    # S bound the key last of all, yet its sends go to the most recent *other* binding: R2, then,
    # once R2 has unbound, R1.  S's own buffer never sees them.
    assert p["S"].text == "bind=1\nused=8\nused=7\nself irq=0 timer=0 rx0=0:\n"
    assert p["R2"].text == ("bind=1\nr irq=1 timer=0 rx0=8:payload rx1=0:\nunbind=1\n"
                            "r irq=1 timer=0 rx0=8:payload rx1=0:\n")
    assert p["R1"].text == ("bind=1\nr irq=0 timer=0 rx0=0: rx1=0:\n"
                            "r irq=1 timer=0 rx0=7:second rx1=0:\n")
    assert all(x.why == "CRASH: Power down" for x in p.values())
    assert p["S"].others == []


def test_empty_send_is_a_ping_and_moves_next_dma(share_file):
    w = World(share_file)
    w.peer("R", 12, "ROUNDS2", actions={BOUND: [("set", "R.bound")], WAIT: [("wait", "S.sent")],
                                        WAIT2: [("set", "R.printed"), ("wait", "S.dead")]})
    w.peer("S", 14, actions={READY: [("wait", "R.bound")], SENT: [("set", "S.sent")],
                             READY2: [("wait", "R.printed")]})
    p = w.run()
    assert p["S"].text == "ping=0\nreal=8\n"
    # the ping: an interrupt, and no buffer used; but the next send lands in the *second* buffer,
    # because the ping advanced next_dma (2.6.23 did so)
    assert p["R"].text == ("bind=1\nr irq=1 timer=0 rx0=0: rx1=0:\n"
                           "r irq=2 timer=0 rx0=0: rx1=8:payload\n")


def test_full_receiver_gets_an_interrupt_and_the_send_is_retried_once(share_file, monkeypatch):
    tries = []
    real = io._transfer_once

    def counting(lg, reg, ident, udma):
        r = real(lg, reg, ident, udma)
        tries.append(r)
        return r
    monkeypatch.setattr(io, "_transfer_once", counting)
    p = receiver_sender(World(share_file), r_flags=("RX_FULL",))
    assert p["S"].text == "used=0\n"
    assert p["R"].text == "bind=1\nr irq=1 timer=0 rx0=57005: rx1=48879:\n"   # untouched
    assert tries == ["full", "full"]
    assert p["R"].why == p["S"].why == "CRASH: Power down"


def test_receiver_bound_with_no_buffers_is_full(share_file, monkeypatch):
    tries = []
    real = io._transfer_once
    monkeypatch.setattr(io, "_transfer_once", lambda *a: tries.append(real(*a)) or tries[-1])
    p = receiver_sender(World(share_file), r_flags=("RX_NUM=0",))
    assert p["S"].text == "used=0\n"
    assert p["R"].text == "bind=1\nr irq=1 timer=0 rx0=0: rx1=0:\n"
    assert tries == ["full", "full"]


def test_a_delivered_send_is_tried_once(share_file, monkeypatch):
    tries = []
    real = io._transfer_once
    monkeypatch.setattr(io, "_transfer_once", lambda *a: tries.append(real(*a)) or tries[-1])
    p = receiver_sender(World(share_file))
    assert p["S"].text == "used=8\n"
    assert p["R"].text == "bind=1\nr irq=1 timer=0 rx0=8:payload rx1=0:\n"
    assert tries == ["done"]


# ---- bad lists: the right Guest dies, the other carries on ------------------------------------

ALIVE_R = "bind=1\nr irq=0 timer=0 rx0=0: rx1=0:\n"     # R after S died: no data, no interrupt
POWER_DOWN = "CRASH: Power down"


@pytest.mark.parametrize("addr, length", [
    (0x200000, 4097),           # over a page
    (0x200ff0, 32),             # across a page boundary
    (0x401000, 16),             # beyond pfn_limit (in the Launcher's memory)
    (0x400ff0, 16),             # ends exactly at pfn_limit: the last byte below it is never usable
])
def test_bad_sender_section_kills_the_sender(share_file, addr, length):
    p = receiver_sender(World(share_file), s_flags=(f"TX_ADDR={addr:#x}", f"TX_LEN={length}"))
    assert p["S"].why == "bad DMA entry: %u@%#x" % (length, addr)
    assert p["S"].text == ""
    assert p["R"].text == ALIVE_R and p["R"].why == POWER_DOWN


def test_sender_section_just_below_pfn_limit_is_fine(share_file):
    p = receiver_sender(World(share_file), s_flags=("TX_ADDR=0x400ff0", "TX_LEN=15"))
    assert p["S"].text == "used=15\n"
    assert p["R"].text.startswith("bind=1\nr irq=1 timer=0 rx0=15:")


@pytest.mark.parametrize("addr, length", [
    (0x200ff0, 32),             # across a page boundary
    (0x400ff0, 16),             # reaching its pfn_limit
])
def test_bad_receiver_section_kills_the_receiver(share_file, addr, length):
    p = receiver_sender(World(share_file), r_flags=(f"RX_ADDR={addr:#x}", f"RX_LEN={length}"))
    assert p["R"].why == "bad DMA entry: %u@%#x" % (length, addr)
    assert p["R"].text == "bind=1\n"
    assert p["S"].text == "used=0\n" and p["S"].why == POWER_DOWN


def test_receiver_array_outside_its_memory(share_file):
    p = receiver_sender(World(share_file), r_flags=("RX_DMAS=0x7ff000",))
    assert p["R"].why == "bad address in registered DMA struct"
    assert p["S"].text == "used=0\n" and p["S"].why == POWER_DOWN


def test_sender_dma_struct_beyond_pfn_limit(share_file):
    # 2.6.23 read it with lgread(), whose kill this is; the struct then reads as zeros, which is an
    # empty send: the receiver still gets its interrupt and no data.
    p = receiver_sender(World(share_file), s_flags=("TX_DMA=0x401000",))
    assert p["S"].why == "bad read address 0x401000 len 100"
    assert p["R"].text == "bind=1\nr irq=1 timer=0 rx0=0: rx1=0:\n" and p["R"].why == POWER_DOWN


def test_sender_section_the_launcher_cannot_read(share_file):
    # pfn_limit allows 16 more pages than the Launcher has: the list passes the checks, and the
    # copy itself fails.
    limit = (0x402000 >> 12) + 16
    p = receiver_sender(World(share_file), s_flags=("TX_ADDR=0x404000", "TX_LEN=16"),
                        s_boot={"pfn_limit": limit})
    assert p["S"].why == "bad address in sending DMA"
    assert p["R"].text == ALIVE_R and p["R"].why == POWER_DOWN


def test_receiver_section_its_launcher_does_not_have(share_file):
    limit = (0x402000 >> 12) + 16
    p = receiver_sender(World(share_file), r_flags=("RX_ADDR=0x404000", "RX_LEN=16"),
                        r_boot={"pfn_limit": limit})
    assert p["R"].why == "Error mapping DMA pages"
    assert p["S"].text == "used=0\n" and p["S"].why == POWER_DOWN
