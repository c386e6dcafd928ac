"""The bundled Guest OS (launcher/guest/os/) booted on the Host, with this test as its Launcher.

The test lays memory out as the 2.6.23 Launcher does (tests/guestrun.py's Booted), adds the
device page at the end of RAM with a console, a block device and a network device, and services
them through the Host API exactly as the Launcher's devices do (abi §8.5-8.7): console output
from key 0, console input by GETDMA(0) + LHREQ_IRQ, block requests on the block page's key, and
Ethernet frames sent to slot 0 of a private net page, the way --tunnet's Launcher sits there.
"""
import errno
import os
import struct
import threading
import time

import pytest

import guestrun
from launcher.guest.bundled import bundled_guest
from lguest_kvm import abi

pytestmark = pytest.mark.kvm

PROMPT = b"lguest$ "
SECTOR = 512
PAGE = 4096
DESC = struct.Struct("<HHHHI")
DEVICE_F_RANDOMNESS = 0x8000
NET_F_NOCSUM = 0x4000
S_ACK, S_DRIVER, S_DRIVER_OK = 1, 2, 4

PEER_MAC = bytes.fromhex("021122334455")     # the "TAP" in slot 0
PEER_IP = bytes([10, 0, 0, 1])
BROADCAST = b"\xff" * 6


def req(*words):
    return struct.pack("<%dI" % len(words), *words)


def csum(data):
    """The Internet checksum; 0 over data that carries a correct one."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst, src, proto, payload):
    return dst + src + struct.pack("!H", proto) + payload


def arp(op, sha, sip, tha, tip):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + sip + tha + tip


def ipv4(src, dst, proto, payload, ttl=64, ident=7):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto, 0,
                      src, dst)
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def icmp(typ, ident, seq, data):
    body = struct.pack("!BBHHH", typ, 0, 0, ident, seq) + data
    return body[:2] + struct.pack("!H", csum(body)) + body[4:]


class OSGuest:
    """The bundled OS in fresh memory: device 0 a console, 1 a disk, 2 a network interface."""

    def __init__(self, mem_mb=16, disk_sectors=64, net=True, block=True, cmdline=b"",
                 net_features=1, sharenet=None):
        """sharenet=(fd, slot): the net page is page 0 of that file, mapped shared as
        --sharenet maps it, and this Guest is in that slot; otherwise the page is private and this
        test is the peer in slot 0, as --tunnet's Launcher is."""
        kinds = ["console"] + (["block"] if block else []) + (["net"] if net else [])
        net_gpa = mem_mb * guestrun.MB + PAGE * kinds.index("net") if net else None
        share = [(net_gpa, sharenet[0], 0)] if sharenet else []
        if sharenet:
            net_features = sharenet[1] | NET_F_NOCSUM
        self.b = guestrun.Booted(bundled_guest(), mem_mb=mem_mb, extra_pages=len(kinds),
                                 cmdline=cmdline, memfd=bool(sharenet), share=share)
        self.mem, self.lg = self.b.mem, self.b.lg
        self.desc = self.b.mem_size
        self.disk = bytearray(disk_sectors * SECTOR)
        self.blk_key = self.net_page = None
        self.sent = []              # frames the Guest sent to slot 0
        self.peer = None            # called with each such frame
        self.death = None
        self.output = b""
        page = self.desc + PAGE
        for i, kind in enumerate(kinds):
            if kind == "console":
                DESC.pack_into(self.mem, self.desc + 12 * i, 1, 0, 0, 0, 0)
            elif kind == "block":
                DESC.pack_into(self.mem, self.desc + 12 * i, 3, DEVICE_F_RANDOMNESS, 0, 1,
                               page // PAGE)
                struct.pack_into("<IIIiI", self.mem, page, 0, 0, 0, 0, disk_sectors)
                self.blk_key, self.blk_irq = page, i + 1
                page += PAGE
            else:
                assert page == net_gpa
                DESC.pack_into(self.mem, self.desc + 12 * i, 2, net_features, 0, 1,
                               page // PAGE)
                if not sharenet:
                    self.mem[page:page + 6] = bytes([PEER_MAC[0] | 1]) + PEER_MAC[1:]  # promisc
                self.net_page, self.net_irq = page, i + 1
                page += PAGE

    @property
    def text(self):
        return self.output.decode("latin-1")

    def status(self, index):
        return DESC.unpack_from(self.mem, self.desc + 12 * index)[2]

    def close(self):
        """Switch the Guest off the way a user would (which also cancels its clock event), then
        close.  A clock event left armed outlives the Guest when the Host leaks its timer (see the
        report on lguest_kvm/kick.py), and its signal would then kill this process."""
        try:
            if self.death is None and self.output.endswith(PROMPT):
                self.type("poweroff\r")
                self.run_until(lambda: False, timeout=5)
        except (AssertionError, OSError):
            pass
        if self.death is None and self.lg.guest is not None:
            self.lg.guest.set_clockevent(0)
        self.b.close()

    # --- the run loop: read() until a condition holds, with a Waker-style break as the timeout ---
    def run_until(self, cond, timeout=10.0):
        lock = threading.Lock()
        state = {"fired": False, "done": False, "eagain": False}

        def fire():
            with lock:
                if state["done"]:
                    return
                state["fired"] = True
            try:
                self.lg.write(req(abi.LHREQ_BREAK, 1))
            except OSError:
                pass

        timer = threading.Timer(timeout, fire)
        timer.daemon = True
        timer.start()
        try:
            while not cond() and self.death is None:
                if self.step() == "break":
                    state["eagain"] = True
                    self.lg.write(req(abi.LHREQ_BREAK, 0))
                    raise AssertionError("timed out; output so far:\n" + self.text)
        finally:
            with lock:
                state["done"] = True
            timer.cancel()
            if state["fired"] and not state["eagain"] and self.death is None:
                while self.step() != "break" and self.death is None:
                    pass
                self.lg.write(req(abi.LHREQ_BREAK, 0))
            timer.join(0.1)

    def step(self):
        try:
            r = self.lg.read(8)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return "break"
            if e.errno == errno.EINTR:
                return "eintr"              # a signal: a Launcher would just read() again
            if e.errno == errno.ENOENT:
                self.death = self.lg.read(1024).rstrip(b"\0").decode("latin-1")
                return "dead"
            raise
        dma, key = struct.unpack("<II", r)
        data = b"".join(self.sections(dma))
        if key == abi.LGUEST_CONSOLE_DMA_KEY:
            self.output += data
            self.b.set_used_len(dma, len(data))
        elif key == self.blk_key:
            self.serve_block(dma)
        elif self.net_page is not None and key == self.net_page:
            self.sent.append(data)
            self.b.set_used_len(dma, len(data))
            if self.peer:
                self.peer(data)
        else:
            raise AssertionError("DMA to unexpected key %#x" % key)
        return "dma"

    def sections(self, gpa):
        dma = abi.lguest_dma.from_buffer_copy(self.mem, gpa)
        out = []
        for addr, length in zip(dma.addr, dma.len):
            if length == 0:
                break
            assert addr + length <= self.b.top, "section past the top of memory"
            out.append(bytes(self.mem[addr:addr + length]))
        return out

    def fill(self, gpa, data):
        """Write data into the sections of the lguest_dma at gpa; returns the count written."""
        dma = abi.lguest_dma.from_buffer_copy(self.mem, gpa)
        done = 0
        for addr, length in zip(dma.addr, dma.len):
            if length == 0 or done == len(data):
                break
            n = min(length, len(data) - done)
            self.mem[addr:addr + n] = data[done:done + n]
            done += n
        return done

    def get_dma(self, key):
        gpa = self.lg.write(req(abi.LHREQ_GETDMA, key))
        irq = struct.unpack_from("<I", self.mem, gpa)[0]     # GETDMA left the IRQ in used_len
        return gpa, irq

    # --- devices, the Launcher's way ---
    def serve_block(self, dma):
        bp = abi.lguest_block_page.from_buffer_copy(self.mem, self.blk_key)
        off = bp.sector * SECTOR
        assert off < len(self.disk), "Bad offset"
        reply, irq = self.get_dma(self.blk_key)
        assert irq == self.blk_irq
        if bp.type:
            data = b"".join(self.sections(dma))
            assert off + len(data) <= len(self.disk)
            self.disk[off:off + len(data)] = data
            self.b.set_used_len(reply, 0)
            n = len(data)
        else:
            n = self.fill(reply, bytes(self.disk[off:off + bp.bytes]))
            self.b.set_used_len(reply, n)
        struct.pack_into("<i", self.mem, self.blk_key + abi.lguest_block_page.result.offset,
                         1 if bp.bytes == n else 2)
        self.lg.write(req(abi.LHREQ_IRQ, irq))
        self.b.set_used_len(dma, 0)

    def deliver_frame(self, frame):
        gpa, irq = self.get_dma(self.net_page + 4 * 1)
        assert irq == self.net_irq
        n = self.fill(gpa, frame)
        self.b.set_used_len(gpa, n)
        self.lg.write(req(abi.LHREQ_IRQ, irq))

    def type(self, text):
        gpa, irq = self.get_dma(abi.LGUEST_CONSOLE_DMA_KEY)
        data = text.encode() if isinstance(text, str) else text
        n = self.fill(gpa, data)
        assert n == len(data)
        self.b.set_used_len(gpa, n)
        self.lg.write(req(abi.LHREQ_IRQ, irq))

    def serve_until(self, event, timeout=20.0):
        """Run the Guest (servicing its devices) until event is set: then a break brings this
        thread back, as the Waker does for the Launcher."""
        def waker():
            event.wait(timeout)
            try:
                self.lg.write(req(abi.LHREQ_BREAK, 1))
            except OSError:
                pass                        # the Guest died meanwhile
        t = threading.Thread(target=waker, daemon=True)
        t.start()
        while self.death is None and self.step() != "break":
            pass
        if self.death is None:
            self.lg.write(req(abi.LHREQ_BREAK, 0))
        t.join(timeout)

    def boot(self):
        self.run_until(lambda: self.output.endswith(PROMPT))
        return self.text

    def cmd(self, line, timeout=10.0):
        """Type a line; return what the command printed (between the echo and the next prompt)."""
        start = len(self.output)
        self.type(line + "\r")
        self.run_until(lambda: b"\n" in self.output[start:] and self.output.endswith(PROMPT),
                       timeout)
        out = self.output[start:-len(PROMPT)].decode("latin-1")
        echoed, _, rest = out.partition("\n")
        assert echoed == line
        return rest


@pytest.fixture
def guest():
    g = OSGuest()
    try:
        yield g
    finally:
        g.close()


def booted(**kw):
    g = OSGuest(**kw)
    g.boot()
    return g


# --- boot, console, shell ---

def test_banner_then_prompt_and_device_status():
    g = OSGuest(mem_mb=64)
    try:
        t = time.monotonic()
        g.run_until(lambda: b"\n" in g.output)
        banner_s = time.monotonic() - t
        assert g.boot() == "lguest-kvm Guest OS: 64 MB, 3 devices\nlguest$ "
        prompt_s = time.monotonic() - t
        # ACKNOWLEDGE, DRIVER, DRIVER_OK: what lguest_bus.c set for a device whose probe succeeded.
        assert [g.status(i) for i in range(4)] == [S_ACK | S_DRIVER | S_DRIVER_OK] * 3 + [0]
        assert banner_s < 2 and prompt_s < 5, (banner_s, prompt_s)
        print("banner after %.3f s, prompt after %.3f s" % (banner_s, prompt_s))
    finally:
        g.close()


def test_help_and_info():
    g = booted(cmdline=b"ip=10.0.0.7 console=hvc0 ")
    try:
        help_text = g.cmd("help")
        for word in ("help", "info", "uptime", "blk [DEV] read N", "blk [DEV] write N PATTERN",
                     "blk [DEV] verify N PATTERN", "ping A.B.C.D", "bench", "poweroff"):
            assert word in help_text
        info = g.cmd("info").splitlines()
        data = abi.lguest_data.from_buffer_copy(g.mem, g.lg.guest.lguest_data)
        assert info[0] == "memory: 16384 KB (16 MB), 16 MB in the linear map"
        assert info[1] == "guest id: %d" % data.guestid
        assert info[2] == "tsc_khz: %d (clock: %s)" % (
            data.tsc_khz, "tsc" if data.tsc_khz else "lguest_data.time")
        assert info[3] == "timer: tickless"
        assert info[4] == "command line: ip=10.0.0.7 console=hvc0 "
        if data.tsc_khz:
            words = info.pop(5).split()
            assert words[:3] == ["boot:", "banner", "after"]
            assert words[4:7] == ["us,", "prompt", "after"]
            assert 0 < int(words[3]) < int(words[7]) < 5_000_000
        assert info[5] == "devices: 3 (device page at 0x1000000)"
        assert info[6] == "  0: console type 1 features 0x0000 status 0x07 irq 1 hvc0"
        assert info[7] == ("  1: block type 3 features 0x8000 status 0x07 irq 2 pages 1 at "
                           "0x1001000 lgba: 64 sectors (32 KB), key 0x1001000")
        mac = "02:00:%02x:%02x:00:00" % (data.guestid & 0xFF, data.guestid >> 8)
        assert info[8] == ("  2: net type 2 features 0x0001 status 0x07 irq 3 pages 1 at "
                           "0x1002000 eth0: mac %s, slot 1, key 0x1002004" % mac)
        assert len(info) == 9
    finally:
        g.close()


def test_echo_line_editing_and_unknown_commands(guest):
    guest.boot()
    start = len(guest.output)
    # Backspace and DEL rub out, an arrow key's escape sequence is skipped, CR LF is one line.
    guest.type("hepl\x7f\x7flx\b\x1b[Ap\r\n")
    guest.run_until(lambda: guest.output.count(PROMPT) == 2)
    out = guest.output[start:].decode()
    assert out.startswith("hepl\b \b\b \blx\b \bp\nCommands:\n")
    assert out.endswith("poweroff                      switch the Guest off\nlguest$ ")
    assert guest.cmd("frobnicate now") == "frobnicate: command not found (try help)\n"
    assert guest.cmd("") == ""
    # ^C throws the line away; two commands typed at once both run.
    start = len(guest.output)
    guest.type("uptime\x03")
    guest.run_until(lambda: guest.output.endswith(b"^C\n" + PROMPT))
    assert guest.output[start:] == b"uptime^C\n" + PROMPT
    start = len(guest.output)
    guest.type("blk nonsense\rfrob\r")
    guest.run_until(lambda: guest.output[start:].count(PROMPT) == 2)
    assert guest.output[start:].decode().endswith(
        "frob\nfrob: command not found (try help)\nlguest$ ")


def test_uptime_advances(guest):
    guest.boot()
    first = guest.cmd("uptime")
    time.sleep(0.3)
    second = guest.cmd("uptime")

    def parse(line):
        words = line.split()
        assert words[0] == "up" and words[2:4] == ["s", "(clock:"]
        assert words[-2:] == ["timer", "interrupts"]
        return float(words[1])
    s1, s2 = parse(first), parse(second)
    assert 0 < s1 < s2 and 0.25 < s2 - s1 < 5


def test_clock_without_a_tsc_frequency():
    """tsc_khz 0 means "don't use the TSC": time then comes from lguest_data.time."""
    g = OSGuest(block=False, net=False)
    try:
        g.lg.guest.tsc_khz = 0      # what the Host tells a Guest on a host without a stable TSC
        g.boot()
        info = g.cmd("info").splitlines()
        assert info[2] == "tsc_khz: 0 (clock: lguest_data.time)"
        assert not any(line.startswith("boot:") for line in info)
        first = float(g.cmd("uptime").split()[1])
        time.sleep(0.3)
        second = float(g.cmd("uptime").split()[1])
        assert 0.25 < second - first < 5
        bench = g.cmd("bench", timeout=20).splitlines()
        assert bench[0] == "bench: tsc_khz 0" and " us " not in bench[1]
    finally:
        g.close()


def test_poweroff(guest):
    guest.boot()
    guest.type("poweroff\r")
    guest.run_until(lambda: False)
    assert guest.death == "CRASH: Power down"
    assert guest.text.endswith("poweroff\nPower down.\n")


# --- the block device ---

def test_blk_write_verify_read(guest):
    guest.boot()
    guest.disk[:] = bytes(range(256)) * (len(guest.disk) // 256)
    assert guest.cmd("blk write 3 ab") == "lgba: wrote sector 3\n"
    assert guest.disk[3 * SECTOR:4 * SECTOR] == b"ab" * 256
    assert guest.disk[2 * SECTOR:3 * SECTOR] == bytes(range(256)) * 2    # neighbours untouched
    assert guest.disk[4 * SECTOR:5 * SECTOR] == bytes(range(256)) * 2
    bp = abi.lguest_block_page.from_buffer_copy(guest.mem, guest.blk_key)
    assert (bp.type, bp.sector, bp.bytes, bp.result, bp.num_sectors) == (1, 3, 512, 1, 64)
    assert guest.cmd("blk verify 3 ab") == "lgba: sector 3 verified\n"
    bp = abi.lguest_block_page.from_buffer_copy(guest.mem, guest.blk_key)
    assert (bp.type, bp.sector, bp.bytes, bp.result) == (0, 3, 512, 1)
    # The reply buffer is given back (used_len 0) after every request.
    reply, _ = guest.get_dma(guest.blk_key)
    guest.b.set_used_len(reply, 0)
    guest.disk[3 * SECTOR + 100] = ord("x")
    assert guest.cmd("blk verify 3 ab") == \
        "lgba: sector 3 differs at byte 100: 0x78, not 0x61\n"
    assert guest.cmd("blk lgba verify 2 ab").startswith("lgba: sector 2 differs at byte 0")
    lines = guest.cmd("blk read 3").splitlines()
    assert lines[0] == "lgba: sector 3"
    assert lines[1] == ("00000000  61 62 61 62 61 62 61 62  61 62 61 62 61 62 61 62"
                        "  |abababababababab|")
    assert lines[2] == "*"
    assert lines[3] == ("00000060  61 62 61 62 78 62 61 62  61 62 61 62 61 62 61 62"
                        "  |ababxbababababab|")
    assert lines[-1] == "00000200"
    assert guest.cmd("blk write 64 zz") == "blk: sector 64 is past the end of lgba (64 sectors)\n"
    assert guest.cmd("blk write 63 zz") == "lgba: wrote sector 63\n"
    assert guest.disk[-SECTOR:] == b"z" * SECTOR
    assert guest.cmd("blk lgbb read 1") == "blk: no device lgbb\n"
    assert guest.cmd("blk").startswith("lgba: 64 sectors (32 KB)\nusage: blk")


def test_no_block_or_net_device():
    g = booted(block=False, net=False)
    try:
        assert g.text == "lguest-kvm Guest OS: 16 MB, 1 device\nlguest$ "
        assert g.cmd("blk read 0") == "blk: no block device\n"
        assert g.cmd("ping 10.0.0.1") == "ping: no network device\n"
    finally:
        g.close()


# --- the network device: this test is the peer in slot 0 ---

def guest_mac(g):
    gid = g.lg.guest.guestid
    return bytes([2, 0, gid & 0xFF, gid >> 8, 0, 0])


def test_net_open_slot_and_receive_buffers(guest):
    guest.boot()
    page = guest.net_page
    assert bytes(guest.mem[page + 6:page + 12]) == guest_mac(guest)     # own slot: features & 0xFFF
    # Eight buffers of 1514 bytes, bound at page + 4 * slot, none crossing a page boundary.
    seen = []
    for _ in range(8):
        gpa, irq = guest.get_dma(page + 4)
        assert irq == guest.net_irq
        secs = abi.lguest_dma.from_buffer_copy(guest.mem, gpa)
        lens = [n for n in secs.len if n]
        assert sum(lens) == 1514 and len(lens) <= 2
        for addr, n in zip(secs.addr, lens):
            assert addr // PAGE == (addr + n - 1) // PAGE
        seen.append(gpa)
    assert len(set(seen)) == 8
    for gpa in seen:
        guest.b.set_used_len(gpa, 0)


def arp_reply_to(frame, g):
    """If frame is an ARP request for PEER_IP, the reply the peer sends back."""
    if frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x01" and frame[38:42] == PEER_IP:
        assert frame[:6] == BROADCAST and frame[6:12] == guest_mac(g)
        return eth(guest_mac(g), PEER_MAC, 0x0806,
                   arp(2, PEER_MAC, PEER_IP, frame[22:28], frame[28:32]))
    return None


def test_guest_answers_arp_and_echo_requests(guest):
    guest.boot()
    my_ip = bytes([10, 0, 0, guest.lg.guest.guestid + 2])
    frames = []

    def peer(frame):
        frames.append(frame)
        reply = arp_reply_to(frame, guest)
        if reply:
            guest.deliver_frame(reply)
    guest.peer = peer
    # Who has the Guest's address?  The Guest answers straight to the asker.
    guest.deliver_frame(eth(BROADCAST, PEER_MAC, 0x0806,
                            arp(1, PEER_MAC, PEER_IP, b"\0" * 6, my_ip)))
    guest.run_until(lambda: frames)
    f = frames.pop()
    assert f == eth(PEER_MAC, guest_mac(guest), 0x0806,
                    arp(2, guest_mac(guest), my_ip, PEER_MAC, PEER_IP))
    # An echo request: the reply carries the same id, sequence and data, with correct checksums.
    payload = bytes(range(48))
    request = icmp(8, 0x1234, 5, payload)
    guest.deliver_frame(eth(guest_mac(guest), PEER_MAC, 0x0800, ipv4(PEER_IP, my_ip, 1, request)))
    guest.run_until(lambda: any(f[12:14] == b"\x08\x00" for f in frames))
    f = frames[-1]
    assert f[:6] == PEER_MAC and f[6:12] == guest_mac(guest)
    ip = f[14:34]
    assert ip[0] == 0x45 and ip[9] == 1 and ip[12:16] == my_ip and ip[16:20] == PEER_IP
    assert struct.unpack("!H", ip[2:4])[0] == 20 + len(request) == len(f) - 14
    assert csum(ip) == 0
    reply = f[34:]
    assert csum(reply) == 0
    assert reply[0] == 0 and reply[4:] == request[4:]
    # A bad checksum, a frame for another MAC and impossible lengths are all ignored.
    bad = bytearray(ipv4(PEER_IP, my_ip, 1, request))
    bad[10] ^= 1
    n = len(frames)
    guest.deliver_frame(eth(guest_mac(guest), PEER_MAC, 0x0800, bytes(bad)))
    guest.deliver_frame(eth(b"\x02\x99" + b"\0" * 4, PEER_MAC, 0x0800,
                            ipv4(PEER_IP, my_ip, 1, request)))
    gpa, _ = guest.get_dma(guest.net_page + 4)
    guest.b.set_used_len(gpa, 10)
    guest.lg.write(req(abi.LHREQ_IRQ, guest.net_irq))
    out = guest.cmd("net")
    assert len(frames) == n
    assert "rx 4 packets" in out and "1 bad length" in out
    assert "arp 10.0.0.1 at 02:11:22:33:44:55 on eth0" in out
    assert "peer slot 0: 03:11:22:33:44:55 (promiscuous)" in out


def test_ping_from_the_guest():
    g = booted(cmdline=b"ip=10.0.0.2")

    def peer(frame):
        reply = arp_reply_to(frame, g)
        if reply:
            g.deliver_frame(reply)
        elif frame[12:14] == b"\x08\x00" and frame[23] == 1 and frame[34] == 8:
            ip = frame[14:34]
            assert csum(ip) == 0 and csum(frame[34:]) == 0
            assert ip[12:16] == bytes([10, 0, 0, 2]) and ip[16:20] == PEER_IP
            echo = frame[34:]
            ident, seq = struct.unpack("!HH", echo[4:8])
            reply = icmp(0, ident, seq, echo[8:])
            g.deliver_frame(eth(guest_mac(g), PEER_MAC, 0x0800,
                                ipv4(PEER_IP, ip[12:16], 1, reply, ttl=63)))
    g.peer = peer
    try:
        lines = g.cmd("ping 10.0.0.1 3 20").splitlines()
        assert lines[0] == "PING 10.0.0.1: 56 data bytes"
        for seq in (1, 2, 3):
            assert lines[seq].startswith("64 bytes from 10.0.0.1: icmp_seq=%d ttl=63 time=" % seq)
            assert lines[seq].endswith(" ms")
        assert lines[4] == "--- 10.0.0.1 ping statistics ---"
        assert lines[5] == "3 packets transmitted, 3 received, 0% packet loss"
        assert lines[6].startswith("rtt min/avg/max = ")
        requests = [f for f in g.sent if f[12:14] == b"\x08\x00"]
        assert len(requests) == 3 and all(len(f) == 14 + 20 + 64 for f in requests)
        # Nobody answers 10.0.0.99: three ARP requests a second apart would take 3 s, so ^C it.
        start = len(g.output)
        g.type("ping 10.0.0.99 1\r")
        g.run_until(lambda: b"PING 10.0.0.99" in g.output[start:])
        g.type("\x03")
        g.run_until(lambda: g.output.endswith(PROMPT))
        assert "1 packets transmitted, 0 received, 100% packet loss" in g.text
    finally:
        g.close()


def test_bench():
    g = booted(block=False, net=False)
    try:
        lines = g.cmd("bench", timeout=20).splitlines()
    finally:
        g.close()
    print("\n".join(lines))
    assert lines[0].startswith("bench: tsc_khz ")
    assert [line.split(":")[1].split("  ")[0].strip() for line in lines[1:]] == [
        "hypercall round trip", "async hypercall (ring, then flush)",
        "SEND_DMA to the Launcher (empty)", "timer IRQ wake-up from HALT (1 us)",
        "one guest instruction (dec; jnz loop)"]
    assert all(" cycles" in line for line in lines[1:])


# --- a periodic tick while the Guest is busy ---

def test_periodic_tick_while_busy():
    g = booted(block=False, net=False, cmdline=b"hz=1000")
    try:
        expected = g.cmd("help")
        for _ in range(5):
            assert g.cmd("help") == expected
        assert "timer: 1000 Hz" in g.cmd("info")
        up = g.cmd("uptime").split()
        assert int(up[-3]) > 10            # timer interrupts: the tick really ran
    finally:
        g.close()


# --- two Guests on one --sharenet page: the Host carries their frames, no Launcher involved ---

def test_two_guests_ping_each_other_over_a_shared_page(tmp_path):
    fd = os.open(tmp_path / "sharenet", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, PAGE)
    b_up, done = threading.Event(), threading.Event()
    result = {}

    def guest_b():
        g = None
        try:
            g = OSGuest(block=False, cmdline=b"ip=10.0.0.3", sharenet=(fd, 1))
            g.boot()
            b_up.set()
            g.serve_until(done)
            result["b_net"] = g.cmd("net")
        except BaseException as e:          # reported below
            result["b_error"] = "%r; B died: %s; B's console:\n%s" % (
                e, g and g.death, g and g.text)
        finally:
            b_up.set()
            if g is not None:
                g.close()

    tb = threading.Thread(target=guest_b, daemon=True)
    tb.start()
    a = OSGuest(block=False, cmdline=b"ip=10.0.0.2", sharenet=(fd, 0))
    try:
        a.boot()
        assert b_up.wait(20)
        ping = a.cmd("ping 10.0.0.3 2 20", timeout=20).splitlines()
        a_net = a.cmd("net")
    finally:
        done.set()
        a.close()
        tb.join(30)
        os.close(fd)
    assert "b_error" not in result, result.get("b_error")
    assert ping[1].startswith("64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=")
    assert ping[2].startswith("64 bytes from 10.0.0.3: icmp_seq=2 ttl=64 time=")
    assert ping[4] == "2 packets transmitted, 2 received, 0% packet loss"
    # Each saw the other in the table, at the other's slot, and learnt its MAC by ARP.
    assert "eth0: mac 02:00:" in a_net and " slot 0 irq 2 nocsum" in a_net
    assert "peer slot 1: 02:00:" in a_net and "arp 10.0.0.3 at 02:00:" in a_net
    assert "peer slot 0: 02:00:" in result["b_net"] and "arp 10.0.0.2 at 02:00:" in result["b_net"]
    # B got an ARP request and two echo requests, and sent an ARP reply and two echo replies.
    assert "rx 3 packets" in result["b_net"] and "tx 3 packets" in result["b_net"]
