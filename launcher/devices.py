# L:450 Devices, the 2.6.23 way.  There is no PCI bus to probe: right after the Guest's RAM sits
# one page of device descriptors, an array of 16 little records (type, features, status, number of
# pages, first page), and the Guest registers a device for every record whose type is not zero.  A
# device that needs memory shared with its driver (the block device's request page, the network's
# table of MAC addresses) gets pages after the descriptor page, so the Guest-physical layout above
# RAM is:
#
#     mem            descriptor page (16 x 12 bytes)
#     mem + 4096     the first device's pages
#     ...            the next device's pages, in the order the devices were created
#     top            end: the Host lets the Guest touch pages below top/4096 (pfn_limit)
#
# Each device's interrupt is its index in the array plus one (0 is the timer).  Devices talk with
# the Launcher through DMA: the Guest sends a buffer list to a key, or binds receive buffers to a
# key; every key here is an address inside Guest memory, by convention in the device's page.
# :*
"""The device descriptor page, device pages and DMA buffer lists (launcher side)."""
import ctypes
import struct
from functools import reduce
from operator import add, or_

from lguest_kvm import abi

PAGE_SIZE = 4096
LGUEST_DEVICE_T_CONSOLE, LGUEST_DEVICE_T_NET, LGUEST_DEVICE_T_BLOCK = 1, 2, 3
LGUEST_DEVICE_F_RANDOMNESS = 0x8000
LGUEST_NET_F_NOCSUM = 0x4000
LGUEST_MAX_DEVICES = 16
DMA_SIZE = 100                                  # struct lguest_dma

_DESC = struct.Struct("<HHHHI")                 # struct lguest_device_desc, 12 bytes
_U32 = struct.Struct("<I")
_DMA_ADDRS = struct.Struct("<16I")
_DMA_LENS = struct.Struct("<16H")
_DMA = struct.Struct("<I16I16H")                # used_len, addr[16], len[16]
assert _DESC.size == 12 and _DESC.size == struct.calcsize("<HHHHI")


class Fatal(Exception):
    """The Launcher must stop: one line for stderr, and an exit status (device errors too)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class InvalidAddress(Fatal):
    """A Guest-supplied pointer that is not below top (2.6.23's check_pointer): fatal, except
    where a device chooses to refuse the request instead."""

    def __init__(self, addr, size):
        super().__init__("Invalid address %#x" % addr)
        self.addr, self.size = addr, size


class Device:
    """One device: a descriptor, maybe pages, and what to do with its DMA and input.

    Subclasses set `input_fd` (watched by the Waker; handle_input() is called when it is readable)
    and/or override handle_output(), called with the gpa of a struct lguest_dma the Guest sent to
    `watch_key`; its return value becomes that DMA's used_len (None leaves used_len alone).
    """
    name = "device"
    input_fd = -1
    handle_output = None

    def __init__(self, devices, dev_type, num_pages=0, features=0, watch_off=0):
        self.devices = devices
        self.index, self.page = devices.new_device(dev_type, num_pages, features)
        self.type, self.features, self.num_pages = dev_type, features, num_pages
        self.irq = self.index + 1
        self.watch_key = (self.page or 0) + watch_off
        devices.add(self)

    def handle_input(self, launcher):
        """Service readable input; False means "stop watching my fd" (2.6.23: EOF)."""
        return True

    def close(self):
        pass


# L:460 The descriptor page and the device pages.  2.6.23 built them as it parsed the command
# line, mapping zero pages at `top` for each new device and moving `top` up.  We count the pages
# first (every device type has a fixed number), allocate Guest memory of exactly `top` bytes, and
# then hand the pages out the same way, so the layout is the same.
# :*
class DeviceList:
    """The devices of one Guest, their descriptor page at gpa `mem` and their pages above it."""

    def __init__(self, memory, mem):
        self.mv = memoryview(memory).cast("B")
        self.mem = mem
        self.top = mem + PAGE_SIZE
        self.devices = []
        self._by_key = None
        self._next_index = 0
        if self.top > len(self.mv):
            raise ValueError("Guest memory has no room for the device descriptor page")
        self.mv[mem:mem + PAGE_SIZE] = bytes(PAGE_SIZE)

    def new_device(self, dev_type, num_pages, features):
        """Take the next descriptor and num_pages fresh pages; returns (index, page gpa or None)."""
        index = self._next_index
        if index >= LGUEST_MAX_DEVICES:
            raise ValueError("too many devices (the most is %d, counting the console)"
                             % LGUEST_MAX_DEVICES)
        page, pfn = None, 0
        if num_pages:
            page, pfn = self.top, self.top // PAGE_SIZE
            if page + num_pages * PAGE_SIZE > len(self.mv):
                raise ValueError("Guest memory has no room for the device pages")
            self.top += num_pages * PAGE_SIZE
            self.mv[page:self.top] = bytes(num_pages * PAGE_SIZE)
        _DESC.pack_into(self.mv, self.mem + index * _DESC.size, dev_type, features, 0,
                        num_pages, pfn)
        self._next_index += 1
        return index, page

    def add(self, dev):
        self.devices.append(dev)
        self._by_key = None

    def descriptor(self, index):
        """(type, features, status, num_pages, pfn) of one descriptor."""
        return _DESC.unpack_from(self.mv, self.mem + index * _DESC.size)

    def find_output(self, key):
        by_key = self._by_key
        if by_key is None:                      # built once, after the last device was added
            by_key = self._by_key = {}
            for dev in reversed(self.devices):
                if dev.handle_output is not None:
                    by_key[dev.watch_key] = dev
        return by_key.get(key)

    # L:470 Trust nothing the Guest hands us.  A struct lguest_dma is a used_len and up to 16
    # (address, length) sections; every address must lie below top, checked the way 2.6.23's
    # check_pointer() did (`addr + size >= top` fails, so the very last byte is never usable).  A
    # section becomes a memoryview straight into Guest memory, which os.readv(), os.writev(),
    # os.preadv() and os.pwritev() accept: the bytes go between the file and the Guest with no
    # copy in between.
    # :*
    def check_pointer(self, addr, size):
        if addr >= self.top or addr + size >= self.top:
            raise InvalidAddress(addr, size)

    def dma_sections(self, dma):
        """The checked (gpa, length) sections of the lguest_dma at `dma`."""
        self.check_pointer(dma, DMA_SIZE)
        addrs = _DMA_ADDRS.unpack_from(self.mv, dma + 4)
        lens = _DMA_LENS.unpack_from(self.mv, dma + 68)
        out, top = [], self.top
        for addr, length in zip(addrs, lens):
            if not length:
                break
            if addr >= top or addr + length >= top:        # check_pointer(), inline: a hot path
                raise InvalidAddress(addr, length)
            out.append((addr, length))
        return out

    def dma_iov(self, dma):
        """The sections of the lguest_dma at `dma` as memoryviews of Guest memory."""
        return self.dma_buffers(dma)[0]

    # L:475 The same, for the hot path every device request takes: the sections as memoryviews,
    # their total, and every address and length OR-ed together (an O_DIRECT transfer needs them
    # all aligned).  Python pays for every bytecode here, so there is one unpack of the whole
    # struct and the loops over the sections run in C (map, max, sum).  Sections that follow each
    # other in Guest-physical memory, as a buffer of consecutive pages does, become one memoryview:
    # fewer objects for us and fewer iovecs for the kernel.  A bad section goes back to
    # dma_sections() to be named.
    # :*
    def dma_buffers(self, dma):
        """(memoryviews, total bytes, OR of every address and length) of the lguest_dma at `dma`."""
        top = self.top
        if dma >= top or dma + DMA_SIZE >= top:
            raise InvalidAddress(dma, DMA_SIZE)
        f = _DMA.unpack_from(self.mv, dma)
        lens = f[17:]
        if 0 in lens:
            lens = lens[:lens.index(0)]
            if not lens:
                return [], 0, 0
        addrs = f[1:1 + len(lens)]
        ends = tuple(map(add, addrs, lens))
        if ends[:-1] == addrs[1:]:              # one run of memory
            if ends[-1] >= top:
                self.dma_sections(dma)
            return [self.mv[addrs[0]:ends[-1]]], ends[-1] - addrs[0], addrs[0] | (ends[-1] - addrs[0])
        if max(ends) >= top:
            self.dma_sections(dma)              # raises InvalidAddress for the first bad one
        iov = list(map(self.mv.__getitem__, map(slice, addrs, ends)))
        return iov, sum(lens), reduce(or_, addrs, reduce(or_, lens))

    def used_len(self, dma):
        self.check_pointer(dma, 4)
        return _U32.unpack_from(self.mv, dma)[0]

    def set_used_len(self, dma, n):
        self.check_pointer(dma, 4)
        _U32.pack_into(self.mv, dma, n & 0xFFFFFFFF)

    def close(self):
        for dev in reversed(self.devices):
            dev.close()
        self.mv.release()


assert DMA_SIZE == ctypes.sizeof(abi.lguest_dma) == _DMA.size
