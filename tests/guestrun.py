"""Boot small test Guests on the Host, the way the 2.6.23 Launcher lays them out."""
import ctypes
import errno
import mmap
import pathlib
import struct

import lguest_kvm
from lguest_kvm import abi, memory
from launcher import loader
from launcher.guest.build import build_guest

GUESTS = pathlib.Path(__file__).parent / "guests"
MB = 1 << 20


def build(*sources, cflags=()):
    """Build a Guest from files in tests/guests/ or (name, text) pairs."""
    return build_guest([GUESTS / s if isinstance(s, str) else s for s in sources], cflags=cflags)


class Booted:
    """A Guest laid out in fresh memory and initialized, ready for read()."""

    def __init__(self, image, mem_mb=4, extra_pages=1, cmdline=b"", pfn_limit=None, memfd=False,
                 share=(), paging=None):
        """memfd=True gives memfd-backed memory (needed to receive DMA from another Guest); share is
        a list of (gpa, fd, file offset): one page of the file mapped MAP_SHARED there (--sharenet)."""
        self.mem_size = mem_mb * MB
        self.top = self.mem_size + extra_pages * 4096        # device pages after RAM
        self.memfd = memfd
        if memfd:
            self.mem = memory.guest_memory(self.top + 4096)
        else:
            self.mem = mmap.mmap(-1, self.top + 4096)
        for gpa, fd, offset in share:
            memory.map_file_page(self.mem, gpa, fd, offset)
        self.page_offset, self.start = loader.load_elf(self.mem, pathlib.Path(image).read_bytes())
        self.pgdir = loader.setup_pagetables(self.mem, self.mem_size, 0, self.page_offset)
        loader.setup_boot_params(self.mem, self.mem_size, cmdline)
        self.lg = lguest_kvm.open(self.mem, paging=paging)
        self.pfn_limit = self.top // 4096 if pfn_limit is None else pfn_limit
        r = self.lg.write(struct.pack("<5I", abi.LHREQ_INITIALIZE, self.pfn_limit, self.pgdir,
                                      self.start, self.page_offset))
        assert r == 16
        self.output = b""
        self.dmas = []

    def dma_sections(self, gpa):
        dma = abi.lguest_dma.from_buffer_copy(self.mem, gpa)
        out = []
        for addr, length in zip(dma.addr, dma.len):
            if length == 0:
                break
            out.append(bytes(self.mem[addr:addr + length]))
        return out

    def set_used_len(self, gpa, n):
        struct.pack_into("<I", self.mem, gpa, n)

    def run(self, max_reads=100000, on_dma=None):
        """Run until the Guest dies; console output (key 0) collected.  Returns the death message."""
        for _ in range(max_reads):
            try:
                r = self.lg.read(8)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return self.lg.read(1024).rstrip(b"\0").decode("latin-1")
                raise
            dma, key = struct.unpack("<II", r)
            if key == abi.LGUEST_CONSOLE_DMA_KEY:
                data = b"".join(self.dma_sections(dma))
                self.output += data
                self.set_used_len(dma, len(data))
            else:
                self.dmas.append((dma, key))
                if on_dma:
                    on_dma(self, dma, key)
        raise AssertionError("Guest did not finish")

    @property
    def text(self):
        return self.output.decode("latin-1")

    def close(self):
        self.lg.close()
        if self.memfd:
            self.memfd = False
            memory.release_guest_memory(self.mem)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_guest(*sources, cflags=(), **kw):
    """Build, boot and run a Guest to its death: (death message, console text, Booted)."""
    return run_guest_image(build(*sources, cflags=cflags), **kw)


def run_guest_image(image, **kw):
    """Boot and run a built Guest to its death: (death message, console text, Booted)."""
    g = Booted(image, **kw)
    try:
        why = g.run()
    finally:
        g.close()
    return why, g.text, g
