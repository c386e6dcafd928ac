"""Guest-to-Guest DMA streams between two Launcher processes (tests/dmapeer.py running
tests/guests/dma_stream.c): every message arrives once and intact, and the receiver can put them
back in order by their sequence numbers; either side can be SIGKILLed mid-stream without the other
hanging or seeing anything but a consistent prefix.

LGUEST_DMA_MESSAGES sets the length of the long stream (default 100000: 10-15 s on kvm-pvm with
2 CPUs, some 7000-9500 messages a second).
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import dmapeer

pytestmark = pytest.mark.kvm

DMAPEER = Path(__file__).resolve().parent / "dmapeer.py"
MESSAGES = int(os.environ.get("LGUEST_DMA_MESSAGES", "100000"))
FOREVER = 10_000_000         # a stream that is still running when we kill one side
PROGRESS = 4096              # dma_stream.c: how often each side says how far it got


def checksum(seq):
    """dma_stream.c's csum() of message `seq`."""
    m = 0xFFFFFFFF
    a = (seq * 2654435761) & m
    b = a ^ ((seq << 13) & m) ^ 0x5bd1e995

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & m
    return ((seq + rotl(a, 5) + rotl(b, 11)) & m) ^ 0xa5a5a5a5


def prefix_sum(n):
    return sum(checksum(s) for s in range(n)) & 0xFFFFFFFF


class Peer:
    """One dmapeer.py process; its JSON lines are collected by a thread."""

    def __init__(self, role, share, n, ms, env):
        img = dmapeer.build_image(role)
        self.role = role
        self.proc = subprocess.Popen([sys.executable, str(DMAPEER), role, str(share), str(n),
                                      str(ms), "--image", str(img)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.events, self.lines = [], queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            self.events.append(ev)
            self.lines.put(ev)
        self.lines.put(None)

    def wait_for(self, pred, timeout):
        """The first event (from now on) for which pred holds; fails after `timeout` s."""
        end = time.monotonic() + timeout
        while True:
            try:
                ev = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                ev = None
                if time.monotonic() < end:
                    continue
            if ev is None:
                raise AssertionError("%s: no such event within %ss (exit %s): %s\n%s" % (
                    self.role, timeout, self.proc.poll(), self.events[-3:], self.stderr()))
            if pred(ev):
                return ev

    def finish(self, timeout):
        """Wait for the process to end; its report and its exit event."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s hung: %s" % (self.role, self.events[-3:])) from None
        self.reader.join(5)
        by = {ev["event"]: ev for ev in self.events}
        assert self.proc.returncode == 0, self.stderr()
        return by.get(self.role), by.get("exit")

    def stderr(self):
        try:
            return self.proc.stderr.read() if self.proc.poll() is not None else ""
        except ValueError:
            return ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def stream(tmp_path):
    """Start peers with a common id directory and shared page; kill whatever is left at the end."""
    share = tmp_path / "sharenet"
    share.write_bytes(bytes(4096))
    env = dict(os.environ, LGUEST_KVM_IDDIR=str(tmp_path / "ids"))
    peers = []

    def start(role, n, ms):
        p = Peer(role, share, n, ms, env)
        peers.append(p)
        if role == "recv":
            p.wait_for(lambda ev: ev["event"] == "ready", 60)
        return p
    yield start
    for p in peers:
        p.kill()


def test_stream_of_messages_arrives_whole_and_in_order(stream):
    n = MESSAGES
    r = stream("recv", n, 10000)
    t0 = time.monotonic()
    s = stream("send", n, 10000)
    limit = 120 + n / 400                          # ~2.5x what this machine needs
    sent, s_exit = s.finish(limit)
    got, r_exit = r.finish(60)
    elapsed = time.monotonic() - t0
    print("\n%d messages in %.1f s: %.0f messages/s (the sender's Guest: %.1f s); sender retries %d, "
          "sleeps %d; receiver halts %d, interrupts %d, out of ring order %d"
          % (n, elapsed, n / elapsed, sent["t"], sent["retries"], sent["sleeps"], got["halts"],
             got["irqs"], got["ooo"]))
    assert sent["sent"] == n and sent["gaveup"] == 0
    assert (got["count"], got["expect"], got["held"], got["dups"], got["far"], got["bad"],
            got["idle"]) == (n, n, 0, 0, 0, 0, 0)
    assert got["sum"] == sent["sum"] == prefix_sum(n)
    assert s_exit["why"] == r_exit["why"] == "CRASH: Power down"
    # a shared key never reaches a Launcher
    assert not [ev for ev in s.events + r.events if ev["event"] == "dma"]


def test_receiver_killed_mid_stream_sender_gives_up(stream):
    r = stream("recv", FOREVER, 10000)
    s = stream("send", FOREVER, 2000)
    seen = r.wait_for(lambda ev: ev["event"] == "progress", 60)["n"]
    os.kill(r.proc.pid, signal.SIGKILL)
    r.proc.wait(10)
    t_kill = time.monotonic()
    sent, s_exit = s.finish(60)
    # the sender found nobody to take its next message, retried for its give-up time, and ended
    assert sent["gaveup"] == 1 and seen <= sent["sent"] < FOREVER
    assert sent["sum"] == prefix_sum(sent["sent"])
    assert s_exit["why"] == "CRASH: Power down"
    assert time.monotonic() - t_kill < 30


def test_sender_killed_mid_stream_receiver_keeps_a_clean_prefix(stream):
    r = stream("recv", FOREVER, 2000)
    s = stream("send", FOREVER, 10000)
    s.wait_for(lambda ev: ev["event"] == "progress" and ev["n"] >= 2 * PROGRESS, 60)
    os.kill(s.proc.pid, signal.SIGKILL)
    s.proc.wait(10)
    got, r_exit = r.finish(60)
    # every message up to where the sender died, once, in order, intact: and then silence
    assert got["idle"] == 1
    assert got["count"] == got["expect"] >= 2 * PROGRESS
    assert (got["held"], got["dups"], got["far"], got["bad"]) == (0, 0, 0, 0)
    assert got["sum"] == prefix_sum(got["count"])
    assert r_exit["why"] == "CRASH: Power down"
