# L:200 Guest memory.  The 2.6.23 Launcher mapped /dev/zero at its own address 0, so a Guest-physical
# address was simply a Launcher address.  Our Launcher is a Python program, so Guest RAM is a buffer
# it owns: guest_memory() makes one.  It is a memfd mapped MAP_SHARED, for one reason: another
# Launcher process must be able to reach this Guest's memory when its Guest sends DMA here through
# a shared key, and a memfd can be opened by a process that has permission (/proc/PID/fd/N).
#
# map_file_page() is how the Launcher shares a page with other Launchers (--sharenet): one page of a
# file mapped MAP_SHARED over a page of Guest memory.  Keys in that page are "shared": the Host
# recognises them by the file behind the page, as 2.6.23 did with futex keys.
# :*
import ctypes
import errno
import mmap
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
MAP_FIXED = 0x10

# memfds behind the buffers guest_memory() made: buffer address -> (fd, size)
_MEMFDS = {}
# Bumped whenever map_file_page() changes what backs Guest memory: key caches must start again.
maps_generation = 0


def buffer_address(buf):
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def guest_memory(size):
    """Zeroed, page-aligned Guest memory of `size` bytes that other Launchers can map."""
    size = (size + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    fd = os.memfd_create("lguest-guest-ram", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.close(fd)
        raise
    _MEMFDS[buffer_address(m)] = (fd, size)
    return m


def release_guest_memory(buf):
    """Give back a guest_memory() buffer's memfd (the mapping goes when the buffer is closed)."""
    entry = _MEMFDS.pop(buffer_address(buf), None)
    if entry is not None:
        os.close(entry[0])


def memfd_of(buf):
    """(fd, size) of the memfd behind a guest_memory() buffer, or None."""
    return _MEMFDS.get(buffer_address(buf))


def map_file_page(buf, gpa, fd, offset=0, pages=1):
    """Map `pages` pages of file `fd` at `offset`, MAP_SHARED, over buf[gpa:]."""
    length = pages * mmap.PAGESIZE
    if gpa % mmap.PAGESIZE or offset % mmap.PAGESIZE or gpa + length > len(buf):
        raise OSError(errno.EINVAL, "map_file_page: unaligned or outside Guest memory")
    global maps_generation
    maps_generation += 1
    addr = buffer_address(buf) + gpa
    r = _libc.mmap(addr, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | MAP_FIXED,
                   fd, offset)
    if r is None or r == ctypes.c_void_p(-1).value:
        e = ctypes.get_errno()
        raise OSError(e, "mmap of the shared page: " + os.strerror(e))


# H:750 Which keys are shared?  2.6.23 asked the futex code, which looked at the Launcher's mapping
# of the key's address.  We look at the same thing through /proc/self/maps: a key in a MAP_SHARED
# file mapping is identified by (device, inode, offset in the file), which is the same in every
# Launcher that maps that file, wherever it maps it; any other key is private to this Guest.
# :*
# Shared mappings that are not files another Launcher could map: anonymous shared memory (which
# /proc shows as /dev/zero) and memfds (Guest RAM itself).  Keys there are private, like 2.6.23's
# keys in the Launcher's private /dev/zero mapping.
_NOT_SHARED_FILES = ("/dev/zero", "/memfd:", "/SYSV", "[")


def _maps():
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5].strip() if len(parts) > 5 else ""
            yield lo, hi, parts[1], int(parts[2], 16), parts[3], int(parts[4]), path


def shared_key_identity(addr):
    """(dev, inode, file offset) when the byte at this address is in a MAP_SHARED file mapping."""
    for lo, hi, perms, off, dev, inode, path in _maps():
        if lo <= addr < hi:
            if perms[3] == "s" and inode != 0 and path and not path.startswith(_NOT_SHARED_FILES):
                major, minor = (int(x, 16) for x in dev.split(":"))
                return (os.makedev(major, minor), inode, off + addr - lo)
            return None
    return None


class KeyCache:
    """shared_key_identity() per page of one Guest's memory, until map_file_page() is called again."""

    def __init__(self, base):
        self.base, self.pages, self.generation = base, {}, maps_generation

    def identity(self, gpa):
        if self.generation != maps_generation:
            self.pages.clear()
            self.generation = maps_generation
        page = gpa & ~0xFFF
        if page not in self.pages:
            self.pages[page] = shared_key_identity(self.base + page)
        ident = self.pages[page]
        return None if ident is None else (ident[0], ident[1], ident[2] + (gpa & 0xFFF))
