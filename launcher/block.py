# L:650 The block device (--block=FILE): a disk that is a file.  Its one page holds a struct
# lguest_block_page, which the Guest driver and we share:
#
#     0  type         0 read, anything else write        (Guest)
#     4  sector       where, in 512-byte sectors          (Guest)
#     8  bytes        how much                            (Guest)
#     12 result       0 pending, 1 done, 2 error          (us)
#     16 num_sectors  the disk's size                     (us, once)
#
# One request is outstanding at a time.  For a write the Guest sends us the data; for a read it
# binds its single reply buffer at the same key and sends an empty DMA as a doorbell.  Either way
# we answer in `result` and with the device's interrupt.
#
# 2.6.23 trusted the request more than we do: an offset past the end killed the Launcher, and a
# write past the end was done and then truncated back.  Here a request that is not entirely inside
# the disk, or whose buffers are not entirely inside the Guest, is refused with result 2 before
# the file is touched, so a confused Guest cannot grow or damage the file.
# :*
"""The block device: requests on the shared page, served straight between file and Guest memory."""
import errno
import mmap
import os
import struct

from .devices import (Device, Fatal, InvalidAddress, LGUEST_DEVICE_F_RANDOMNESS,
                      LGUEST_DEVICE_T_BLOCK)

SECTOR = 512
_REQ = struct.Struct("<iII")                    # type, sector, bytes
_RESULT = struct.Struct("<i")
_NUM_SECTORS = struct.Struct("<I")
RESULT_OFF, NUM_SECTORS_OFF = 12, 16
O_DIRECT = getattr(os, "O_DIRECT", 0)


class BlockError(Fatal):
    pass


class Block(Device):
    name = "block"

    # L:660 Opening the disk.  2.6.23 opened it O_DIRECT, so that the Guest's own page cache is the
    # only cache and a write the Guest was told is done is on the disk, not in ours.  Not every
    # filesystem allows O_DIRECT (tmpfs didn't, for years), and O_DIRECT wants the buffers, lengths
    # and offset aligned; so we keep two descriptors, a direct one when the filesystem allows it
    # and an ordinary one, and each request uses the direct one when it is aligned.
    # :*
    def __init__(self, devices, path, launcher):
        self.path = path
        self.fd = self.direct_fd = -1
        self.read_only = False
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            # A file we may only read still makes a disk: its writes fail (result 2), loudly.
            if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise BlockError(f"cannot open block file {path}: {e.strerror}") from None
            try:
                self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise BlockError(f"cannot open block file {path}: {e.strerror}") from None
            self.read_only = True
            launcher.warn(f"block {path}: {e.strerror}: read-only, the Guest's writes will fail")
        try:
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
            if O_DIRECT:
                try:
                    self.direct_fd = os.open(path, (os.O_RDONLY if self.read_only else os.O_RDWR)
                                             | os.O_CLOEXEC | O_DIRECT)
                except OSError:
                    self.direct_fd = -1
            super().__init__(devices, LGUEST_DEVICE_T_BLOCK, 1, LGUEST_DEVICE_F_RANDOMNESS)
        except BaseException:
            self.close()
            raise
        self.mv = devices.mv
        self.align = SECTOR
        _NUM_SECTORS.pack_into(self.mv, self.page + NUM_SECTORS_OFF, self.size // SECTOR)
        launcher.verbose("device %d (irq %d): block %s, %d sectors, %s" % (
            self.index, self.irq, path, self.size // SECTOR,
            "O_DIRECT" if self.direct_fd >= 0 else "buffered (no O_DIRECT here)"))

    # L:670 A request.  Find the reply buffer first: it carries the interrupt to raise, and a
    # read needs it for the data.  Then check everything — the buffers are below top, their total
    # is exactly `bytes`, the range lies inside the file — and only then do the one preadv() or
    # pwritev().  What we answer in used_len: the bytes read into the reply, 0 for a write (the
    # reply buffer stays free), 0 to the sent DMA itself.
    # :*
    def handle_output(self, launcher, dma):
        kind, sector, nbytes = _REQ.unpack_from(self.mv, self.page)
        write = kind != 0
        reply = launcher.getdma(self.page)
        irq = self._reply_irq(reply)
        try:
            if not write and reply is None:
                raise BlockError("read without a reply buffer bound")
            iov, total, bits = self.devices.dma_buffers(dma if write else reply)
            off = sector * SECTOR
            if total != nbytes:
                raise BlockError("%s of %u bytes but buffers of %u" % (
                    "write" if write else "read", nbytes, total))
            if off >= self.size or off + nbytes > self.size:
                raise BlockError("%s at sector %u (%u bytes) is past the end (%u sectors)" % (
                    "write" if write else "read", sector, nbytes, self.size // SECTOR))
            if write:
                if self.read_only:
                    raise OSError(errno.EROFS, "write refused: the file is read-only")
                self._check_growth(launcher, _what(write, sector), off, nbytes)
            done, how = self._io(iov, off, write, total, bits)
            if launcher.opts.verbose:
                launcher.verbose("block: %s %u bytes at sector %u (%s)" % (
                    "WRITE" if write else "READ", done, sector, how))
            if done != nbytes:
                launcher.warn("block: %s: %s" % (_what(write, sector), self._short(off, nbytes, done)))
        except (BlockError, InvalidAddress) as e:
            launcher.verbose("block: refused: %s" % e)
            done = -1
        except OSError as e:
            launcher.warn("block %s: %s: %s" % (self.path, _what(write, sector), e.strerror))
            done = -1
        if reply is not None:
            self.devices.set_used_len(reply, 0 if write or done < 0 else done)
        _RESULT.pack_into(self.mv, self.page + RESULT_OFF, 1 if done == nbytes else 2)
        launcher.trigger_irq(irq)
        return 0

    # L:690 The disk's size is fixed when the Launcher starts: the Guest was told num_sectors once.
    # But the file is the user's, and it can shrink under us (a truncate(1) while the Guest runs).
    # Then a read past the file's new end comes back short: that is result 2, never zeros passed
    # off as data, and one line says why.  A write there is still inside the disk, so it is done, as
    # 2.6.23's Launcher did it, and the file grows back as far as that write (never past the size
    # it had at start); the hole in between reads as zeros, so we say so when it happens.
    # :*
    def _current_size(self):
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return None

    def _check_growth(self, launcher, what, off, nbytes):
        now = self._current_size()
        if now is not None and off + nbytes > now:
            launcher.warn("block: %s: beyond the end of %s, now %u bytes (truncated while in "
                          "use?): writing it extends the file%s" % (
                              what, self.path, now,
                              ", bytes %u..%u read as zeros" % (now, off - 1) if off > now else ""))

    def _short(self, off, nbytes, done):
        now = self._current_size()
        if now is not None and off + nbytes > now:
            return "beyond the end of %s, now %u bytes (truncated while in use?): %u of %u bytes" \
                % (self.path, now, done, nbytes)
        return "%s: only %u of %u bytes" % (self.path, done, nbytes)

    def _reply_irq(self, reply):
        """The IRQ GETDMA left in the reply's used_len (a Guest bound nothing: ours anyway)."""
        if reply is None:
            return self.irq
        irq = self.devices.used_len(reply)      # the Host checked this address
        return irq if 0 < irq < 32 else self.irq

    # L:680 The transfer itself: straight between the file and the memoryviews of Guest memory.
    # O_DIRECT when every buffer, every length and the offset are aligned (`bits` is all of the
    # buffers' addresses and lengths OR-ed together); if the filesystem still says EINVAL (it
    # wants bigger alignment than we guessed), we learn that and use the ordinary descriptor from
    # then on for such requests.
    # :*
    def _io(self, iov, off, write, total, bits):
        fd = self.fd
        if self.direct_fd >= 0 and not (bits | off) & (self.align - 1):
            fd = self.direct_fd
        op = os.pwritev if write else os.preadv
        try:
            return self._all(op, fd, iov, off, total), "O_DIRECT" if fd == self.direct_fd else "buffered"
        except OSError as e:
            if fd != self.direct_fd or e.errno != errno.EINVAL:
                raise
            self.align = mmap.PAGESIZE if self.align < mmap.PAGESIZE else 1 << 30
            return self._all(op, self.fd, iov, off, total), "buffered"

    @staticmethod
    def _all(op, fd, iov, off, want):
        """One preadv/pwritev of `want` bytes, continued if the kernel did only part of it."""
        total = 0
        while True:
            n = op(fd, iov, off + total)
            total += n
            if n <= 0 or total >= want:
                return total
            iov = _advance(iov, n)

    # Written data must be on the disk when we exit: the Guest was told it was.
    def close(self):
        for name in ("direct_fd", "fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                if name == "fd":
                    try:
                        os.fsync(fd)
                    except OSError:
                        pass
                os.close(fd)
                setattr(self, name, -1)


def _what(write, sector):
    return "%s of sector %u" % ("write" if write else "read", sector)


def _advance(iov, n):
    out = []
    for b in iov:
        if n >= len(b):
            n -= len(b)
            continue
        out.append(b[n:])
        n = 0
    return out
