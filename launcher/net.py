# L:700 The network.  A 2.6.23 lguest network is not a wire but a table: the device's page holds
# 682 six-byte MAC addresses, one "slot" per machine on the network, and each slot's key is the
# page's address plus four times the slot number.  A Guest learns its own slot from the low bits
# of the descriptor's features, writes its MAC there, and binds its receive buffers to its slot's
# key.  To transmit, it looks down the table and sends the packet to the key of every slot whose
# owner should see it (a broadcast, a matching MAC, or a slot with the "promiscuous" bit 0 of its
# first byte set).
#
# Two ways to give a Guest such a table:
#   --tunnet  the table is private to this Guest, slot 0 is the Launcher itself in front of a TAP
#             device, so packets go to and from the host's network stack;
#   --sharenet  the table is one page of a file that several Launchers map; the Guests find each
#             other in it, and the Host moves their packets directly, Guest to Guest.
# :*
"""Network devices: --tunnet (a TAP device) and --sharenet (a page shared between Guests)."""
import errno
import fcntl
import ipaddress
import os
import socket
import struct

from lguest_kvm.memory import map_file_page

from .devices import (Device, Fatal, LGUEST_DEVICE_F_RANDOMNESS, LGUEST_DEVICE_T_NET,
                      LGUEST_NET_F_NOCSUM, PAGE_SIZE)

NET_PEERNUM = 1                                 # tunnet: the Guest's slot; we are slot 0
MAC_LEN = 6
NET_SLOTS = PAGE_SIZE // MAC_LEN                # 682
BRIDGE_PREFIX = "bridge:"

TUNSETNOCSUM = 0x400454C8                       # _IOW('T', 200, int)
TUNSETIFF = 0x400454CA                          # _IOW('T', 202, int)
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
IFF_UP = 0x1
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCSIFADDR = 0x8916
SIOCGIFHWADDR = 0x8927
SIOCBRADDIF = 0x89A2
IFNAMSIZ = 16


class NetError(Fatal):
    pass


def peer_offset(slot):
    return 4 * slot


def parse_tunnet(arg):
    """--tunnet's value: ("ip", IPv4Address) or ("bridge", name); ValueError if neither."""
    if arg.startswith(BRIDGE_PREFIX):
        name = arg[len(BRIDGE_PREFIX):]
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
            raise ValueError(f"bad bridge name {name!r}")
        return "bridge", name
    try:
        return "ip", ipaddress.IPv4Address(arg)
    except ValueError:
        raise ValueError(f"{arg!r} is neither an IPv4 address nor bridge:NAME") from None


def _ifreq(name, payload=b""):
    return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")


class TunNet(Device):
    name = "tunnet"

    # L:710 --tunnet: a TAP device ("tap%d", Ethernet frames with no extra header) whose other
    # end is the host's network stack.  We sit in slot 0 of the Guest's table and put the TAP's
    # MAC there with the promiscuous bit set: the Guest then sends us every packet, and the host
    # decides what to do with them.  The Guest is slot 1.  With an address, the TAP gets it and
    # comes up; with bridge:NAME, the TAP joins that bridge instead.  (TUNSETNOCSUM is what
    # 2.6.23 asked for; today's kernels accept and ignore it.)
    # :*
    def __init__(self, devices, arg, launcher):
        kind, value = parse_tunnet(arg)
        self.fd = -1
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise NetError(f"cannot open /dev/net/tun: {e.strerror}") from None
        try:
            flags = struct.pack("H", IFF_TAP | IFF_NO_PI)
            ifr = fcntl.ioctl(self.fd, TUNSETIFF, _ifreq("tap%d", flags))
            self.ifname = ifr[:IFNAMSIZ].rstrip(b"\0").decode()
            try:
                fcntl.ioctl(self.fd, TUNSETNOCSUM, 1)
            except OSError:
                pass
            super().__init__(devices, LGUEST_DEVICE_T_NET, 1,
                             NET_PEERNUM | LGUEST_DEVICE_F_RANDOMNESS, peer_offset(0))
            mac = self._configure(kind, value)
        except OSError as e:
            self.close()
            raise NetError(f"configuring TAP device: {e.strerror}") from None
        except BaseException:
            self.close()
            raise
        mv = devices.mv
        mv[self.page:self.page + MAC_LEN] = mac
        mv[self.page] |= 1                      # promiscuous: we want every packet
        self.input_fd = self.fd
        self.sent = False
        self.scratch = bytearray(65536)
        launcher.verbose("device %d (irq %d): tun %s: %s, mac %s" % (
            self.index, self.irq, self.ifname,
            value if kind == "ip" else "bridge " + value, mac.hex(":")))

    def _configure(self, kind, value):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            if kind == "bridge":
                index = socket.if_nametoindex(self.ifname)
                try:
                    fcntl.ioctl(s, SIOCBRADDIF, _ifreq(value, struct.pack("i", index)))
                except OSError as e:
                    raise NetError(f"adding {self.ifname} to bridge {value}: "
                                   f"{e.strerror}") from None
            else:
                sin = struct.pack("H2s4s", socket.AF_INET, b"", value.packed)
                try:
                    fcntl.ioctl(s, SIOCSIFADDR, _ifreq(self.ifname, sin))
                except OSError as e:
                    raise NetError(f"setting {self.ifname} address {value}: {e.strerror}") from None
            flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(self.ifname)),
                                       IFNAMSIZ)[0]
            try:
                fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(self.ifname, struct.pack("H", flags | IFF_UP)))
            except OSError as e:
                raise NetError(f"bringing {self.ifname} up: {e.strerror}") from None
            hw = fcntl.ioctl(s, SIOCGIFHWADDR, _ifreq(self.ifname))
            return hw[IFNAMSIZ + 2:IFNAMSIZ + 2 + MAC_LEN]

    # L:720 Output (the Guest sent to slot 0): the frame goes to the TAP as it is, and the Guest
    # learns how much went.  Input (the TAP has a frame): a receive buffer bound to the Guest's
    # slot key, read straight into it, its length in used_len, and the interrupt.  No buffer means
    # the frame is dropped — with a warning, but only once the Guest has shown it is using the
    # network by sending, or we'd grumble about every packet the host sends before the Guest's
    # driver is up.
    # :*
    def handle_output(self, launcher, dma):
        iov = launcher.dma_iov(dma)
        self.sent = True
        try:
            return os.writev(self.fd, iov)
        except OSError as e:
            launcher.verbose(f"tun {self.ifname}: write: {e.strerror}")
            return 0xFFFFFFFF

    def handle_input(self, launcher):
        dma = launcher.getdma(self.page + peer_offset(NET_PEERNUM))
        iov = launcher.dma_iov(dma) if dma is not None else []
        irq = launcher.devices.used_len(dma) if dma is not None else None   # GETDMA put it there
        target = iov or [memoryview(self.scratch)]      # no buffer (or an empty one): drop it
        try:
            n = os.readv(self.fd, target)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EINTR):
                raise NetError(f"reading network: {e.strerror}") from None
            n = 0
        if dma is not None:
            launcher.devices.set_used_len(dma, n if iov else 0)
        if n > 0 and iov:
            launcher.trigger_irq(irq)
        elif n > 0 and self.sent:
            launcher.warn("network: no dma buffer!")
        return True

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# L:750 --sharenet=FILE: the table is one page of a file, mapped MAP_SHARED over the device page,
# so every Guest whose Launcher maps the same file sees the same table and the same keys.  A
# missing file is created with one zero page, readable and writable by its owner only — other
# users have no business on this network.  Which slot is ours?  The first one we can put a
# one-byte write lock on (F_SETLK at offset = slot): the lock goes when we do, however we die, and
# the next Launcher can have the slot.  The Guest learns it from the features, with NOCSUM:
# packets between Guests need no checksums.  After that the Launcher has nothing to do: sends to
# these keys go from Guest to Guest inside the Host.
# :*
_held_slots = set()     # (st_dev, st_ino, slot): POSIX locks don't stop this process itself


class ShareNet(Device):
    name = "sharenet"

    def __init__(self, devices, path, launcher):
        self.fd = -1
        self.fd = _open_net_file(path)
        try:
            st = os.fstat(self.fd)
            self.slot = _find_slot(self.fd, path, st)
            self.lock_id = (st.st_dev, st.st_ino, self.slot)
            super().__init__(devices, LGUEST_DEVICE_T_NET, 1, self.slot | LGUEST_NET_F_NOCSUM)
            try:
                map_file_page(launcher.memory, self.page, self.fd, 0)
            except OSError as e:
                raise NetError(f"could not mmap {path}: {e.strerror}") from None
        except BaseException:
            self.close()
            raise
        launcher.verbose("device %d (irq %d): shared net %s, slot %d" % (
            self.index, self.irq, path, self.slot))

    def close(self):
        _held_slots.discard(getattr(self, "lock_id", None))
        if self.fd >= 0:
            os.close(self.fd)                   # drops our lock: the slot is free again
            self.fd = -1


def _open_net_file(path):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)                # whatever the umask says
            os.write(fd, bytes(PAGE_SIZE))
        except FileExistsError:                 # another Launcher just made it
            return _open_net_file(path)
        except OSError as e:
            raise NetError(f"cannot create net file {path}: {e.strerror}") from None
    except OSError as e:
        raise NetError(f"cannot open net file {path}: {e.strerror}") from None
    try:
        if os.fstat(fd).st_size < PAGE_SIZE:
            os.ftruncate(fd, PAGE_SIZE)         # a shorter file would fault when mapped
    except OSError as e:
        os.close(fd)
        raise NetError(f"net file {path}: {e.strerror}") from None
    return fd


def _find_slot(fd, path, st):
    for slot in range(NET_SLOTS):
        if (st.st_dev, st.st_ino, slot) in _held_slots:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot, os.SEEK_SET)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                continue
            raise NetError(f"locking a slot in {path}: {e.strerror}") from None
        _held_slots.add((st.st_dev, st.st_ino, slot))
        return slot
    raise NetError(f"No free slots in network file {path}")
