# L:040 The Launcher's first real job is to turn a kernel file into a Guest's
# memory.  The Guest's "physical" memory is simply a buffer the Launcher owns
# (an mmap of zero pages, gpa 0 at its start), and lguest's boot protocol is
# deliberately simple: copy the kernel's loadable segments to their physical
# addresses, build page tables that map all of memory at the kernel's
# PAGE_OFFSET, and write a "zero page" of boot parameters at address 0.
# Then the Launcher tells the Host three numbers — the page directory, the
# entry point and the page offset — and the Guest is ready to run.
#
# Everything here works on any writable buffer (bytearray, mmap, memoryview)
# and writes with slices and struct.pack_into, never byte by byte: Guests
# can have hundreds of megabytes.
# :*
"""Load an lguest kernel (ELF) into Guest memory and lay out its first pages."""

from __future__ import annotations

import array
import struct
import sys

PAGE_SIZE = 4096
MAGIC = b"GenuineLguest"
PT_LOAD = 1
ET_EXEC = 2
EM_386 = 3
PTE_FLAGS = 0x7                     # present, writable, user
BOOT_CMDLINE_GPA = 0x1000
KERNEL_GPA = 0x100000               # where a kernel normally starts

_EHDR = struct.Struct("<16sHHIIIIIHHHHHH")     # Elf32_Ehdr, 52 bytes
_PHDR = struct.Struct("<IIIIIIII")             # Elf32_Phdr, 32 bytes


class LoadError(Exception):
    """The kernel image or the requested layout cannot be used."""


def _bytes_view(mem) -> memoryview:
    mv = memoryview(mem)
    if mv.readonly:
        raise LoadError("guest memory is read-only")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def _page_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


# L:050 An lguest kernel is an ordinary 32-bit i386 executable, like
# vmlinux.  We check just enough of its header to be sure we understand it,
# then walk its program headers.  Each loadable segment goes to its
# *physical* address (p_paddr), because the Guest's memory is physical
# memory; the bytes past p_filesz (.bss) are left as the zeroes the memory
# already holds.  The difference between each segment's virtual and physical
# address is the kernel's PAGE_OFFSET, and every segment must agree on it.
# The entry point in the header is ignored, as 2.6.23 ignored it.
def _elf_segments(image) -> list[tuple[int, int, int, int]]:
    """Checked PT_LOADs as (offset, paddr, filesz, page_offset, extent in memory)."""
    if len(image) < 4 or bytes(image[:4]) != b"\x7fELF":
        raise LoadError("not an ELF file (no \\x7fELF magic)")
    if len(image) < _EHDR.size:
        raise LoadError("truncated ELF header")
    (ident, e_type, e_machine, _, _, e_phoff, _, _, _, e_phentsize, e_phnum,
     _, _, _) = _EHDR.unpack_from(image, 0)
    if ident[4] != 1:
        raise LoadError(f"not a 32-bit ELF (class {ident[4]})")
    if ident[5] != 1:
        raise LoadError("not a little-endian ELF")
    if e_type != ET_EXEC:
        raise LoadError(f"ELF is not an executable (e_type {e_type})")
    if e_machine != EM_386:
        raise LoadError(f"ELF is not for i386 (e_machine {e_machine})")
    if e_phentsize != _PHDR.size:
        raise LoadError(f"bad ELF program header size {e_phentsize}")
    if not 1 <= e_phnum <= 65536 // _PHDR.size:
        raise LoadError(f"bad ELF program header count {e_phnum}")
    if e_phoff + e_phnum * _PHDR.size > len(image):
        raise LoadError("ELF program headers run past the end of the file")
    segs = []
    for i in range(e_phnum):
        (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _,
         _) = _PHDR.unpack_from(image, e_phoff + i * _PHDR.size)
        if p_type != PT_LOAD:
            continue
        if p_offset + p_filesz > len(image):
            raise LoadError(f"ELF segment {i} runs past the end of the file")
        po = (p_vaddr - p_paddr) & 0xFFFFFFFF
        if segs and po != segs[0][3]:
            raise LoadError(f"page offset of ELF segment {i} is different "
                            f"({po:#x}, not {segs[0][3]:#x})")
        segs.append((p_offset, p_paddr, p_filesz, po, max(p_filesz, p_memsz)))
    if not segs:
        raise LoadError("ELF has no loadable segments")
    return segs


def load_elf(mem, image, *, mem_size: int | None = None) -> tuple[int, int]:
    """Copy the kernel's PT_LOAD segments into Guest memory.

    Returns (page_offset, start), start being the Guest-virtual address
    right after "GenuineLguest".  mem_size limits the usable memory (default:
    the whole buffer).
    """
    segs = _elf_segments(image)
    with _bytes_view(mem) as mv, memoryview(image) as src:
        size = len(mv) if mem_size is None else min(mem_size, len(mv))
        for _, paddr, _, _, extent in segs:
            if paddr + extent > size:
                raise LoadError("kernel does not fit in memory")
        for off, paddr, filesz, _, _ in segs:
            mv[paddr:paddr + filesz] = src[off:off + filesz]
        page_offset = segs[0][3]
        lo = min(s[1] for s in segs)
        hi = max(s[1] + s[2] for s in segs)
        start = _entry_point(mv, lo, hi, page_offset)
    return page_offset, start
# :*


# L:060 Where does the kernel start?  Not where its ELF header says: the
# Launcher searches the loaded bytes for the string "GenuineLguest", and the
# entry point is the byte right after it.  A kernel built for lguest puts its
# lguest entry code there; any other kernel lacks the string, and we refuse
# to run it rather than jump into code that expects real hardware.  The
# address we hand the Host is virtual (the Guest runs with paging on from
# its first instruction), so the page offset is added.
def _entry_point(mv: memoryview, lo: int, hi: int, page_offset: int) -> int:
    if page_offset == 0:
        raise LoadError("Could not determine page offset")
    idx = bytes(mv[lo:hi]).find(MAGIC)
    if idx < 0:
        raise LoadError('No "GenuineLguest" in the kernel')
    return (lo + idx + len(MAGIC) + page_offset) & 0xFFFFFFFF
# :*


def load_initrd(mem, mem_size: int, initrd) -> int:
    """Place an initrd at the top of memory; returns its page-rounded size."""
    size = _page_up(len(initrd))
    if size > mem_size:
        raise LoadError("initrd does not fit in memory")
    with _bytes_view(mem) as mv:
        if mem_size > len(mv):
            raise LoadError("memory size is larger than the guest memory buffer")
        base = mem_size - size
        mv[base:base + len(initrd)] = initrd
        mv[base + len(initrd):mem_size] = bytes(size - len(initrd))
    return size


def _u32_array(values: range) -> bytes:
    arr = array.array("I", values)
    if arr.itemsize != 4:                       # pragma: no cover
        arr = array.array("L", values)
    if sys.byteorder != "little":               # pragma: no cover
        arr.byteswap()
    return arr.tobytes()


# L:070 The Guest wakes up with paging already on, so the Launcher must give
# it page tables.  They are as plain as page tables get: one page directory
# just below the initrd (or the top of memory), and below it enough page
# table pages to map every page of memory, in order, starting at the
# kernel's PAGE_OFFSET.  Page i of memory appears at virtual PAGE_OFFSET +
# i * 4096, and nothing is mapped at virtual address 0 — the Guest's first
# instructions must already run at their virtual addresses.  Memory beyond
# what fits above PAGE_OFFSET (1 GB for 0xC0000000) simply isn't mapped.
#
# Each entry is "present, writable, user" (0x7).  The Guest will replace
# these tables with its own as soon as it likes; the Host only ever sees
# them through its shadow page tables.
def setup_pagetables(mem, mem_size: int, initrd_size: int, page_offset: int) -> int:
    """Build the initial page tables; returns the page directory's gpa."""
    if mem_size % PAGE_SIZE:
        raise LoadError("memory size is not a whole number of pages")
    if not 0 <= page_offset < 1 << 32:
        raise LoadError(f"bad page offset {page_offset:#x}")
    initrd_size = _page_up(initrd_size)
    mapped = min(mem_size, (1 << 32) - page_offset) // PAGE_SIZE
    pte_pages = (mapped + 1023) // 1024
    pgdir = mem_size - initrd_size - PAGE_SIZE
    linear = pgdir - pte_pages * PAGE_SIZE
    if linear < 0:
        raise LoadError("memory is too small for the initial page tables")
    with _bytes_view(mem) as mv:
        if mem_size > len(mv):
            raise LoadError("memory size is larger than the guest memory buffer")
        ptes = _u32_array(range(PTE_FLAGS, mapped * PAGE_SIZE + PTE_FLAGS, PAGE_SIZE))
        mv[linear:linear + len(ptes)] = ptes
        mv[linear + len(ptes):pgdir] = bytes(pgdir - linear - len(ptes))
        pgd = bytearray(PAGE_SIZE)
        first = (page_offset >> 22) * 4
        pdes = _u32_array(range(linear | PTE_FLAGS, pgdir, PAGE_SIZE))
        pgd[first:first + len(pdes)] = pdes
        mv[pgdir:pgdir + PAGE_SIZE] = pgd
    return pgdir
# :*


# L:080 Last, the boot parameters: the "zero page" at Guest-physical address
# 0, in the layout of the i386 Linux boot protocol.  An lguest Guest reads
# only a few fields of it: a one-entry memory map saying "all of memory is
# RAM", the address of the command line (which we store at 0x1000), and, if
# there is one, where the initrd sits.  Offset 0x23C holds 1 for "this is an
# lguest Guest": a field later kernels read, which a 2.6.23 Guest ignores
# because it found its entry point by the magic string instead.
def setup_boot_params(mem, mem_size: int, cmdline: bytes | str,
                      initrd_size: int = 0) -> None:
    """Write the boot parameters page (gpa 0) and the command line (gpa 0x1000)."""
    if isinstance(cmdline, str):
        cmdline = cmdline.encode()
    if BOOT_CMDLINE_GPA + len(cmdline) + 1 > min(mem_size, KERNEL_GPA):
        raise LoadError("kernel command line is too long")
    initrd_size = _page_up(initrd_size)
    if initrd_size > mem_size:
        raise LoadError("initrd does not fit in memory")
    zero_page = bytearray(PAGE_SIZE)
    zero_page[0x1E8] = 1                                      # e820_entries
    struct.pack_into("<QQI", zero_page, 0x2D0, 0, mem_size, 1)  # E820_RAM
    struct.pack_into("<I", zero_page, 0x228, BOOT_CMDLINE_GPA)  # cmd_line_ptr
    if initrd_size:
        zero_page[0x210] = 0xFF                               # type_of_loader
        struct.pack_into("<II", zero_page, 0x218, mem_size - initrd_size, initrd_size)
    struct.pack_into("<I", zero_page, 0x23C, 1)               # lguest Guest
    with _bytes_view(mem) as mv:
        if mem_size > len(mv):
            raise LoadError("memory size is larger than the guest memory buffer")
        mv[0:PAGE_SIZE] = zero_page
        end = BOOT_CMDLINE_GPA + len(cmdline)
        mv[BOOT_CMDLINE_GPA:end] = cmdline
        mv[end] = 0
# :*


# L:400 Not every kernel arrives as a vmlinux.  What a distribution ships is
# a bzImage: a little real-mode boot sector and setup code, a decompressor,
# and the kernel itself gzipped inside.  The 2.6.23 Launcher didn't bother
# to understand the wrapping at all: it scanned the file for the first gzip
# header (the bytes 1F 8B, then seven more bytes, the last of which names the
# operating system that compressed it: 3 for Unix), and gunzipped from there
# to physical address 1 MB, exactly where a vmlinux's segments would have
# gone.  If the first gzip header it meets isn't marked "Unix", it gives up.
#
# Its byte-at-a-time state machine has one oddity we keep: a 1F straight
# after a 1F does not start a new header, so in a run of 1Fs before an 8B
# only an odd-length run matches.  (That never matters for a real bzImage;
# it does mean we find exactly the header 2.6.23 found.)
GZIP_OS_UNIX = 3


def find_gzip_header(image) -> int:
    """Offset of the first gzip header, as 2.6.23's load_bzimage() found it."""
    data = bytes(image) if not isinstance(image, bytes) else image
    pos = data.find(b"\x1f\x8b")
    while pos >= 0:
        run = 0
        while pos - run - 1 >= 0 and data[pos - run - 1] == 0x1F:
            run += 1
        if run % 2 == 0:                       # this 1F starts a header
            if pos + 10 > len(data):
                break
            if data[pos + 9] != GZIP_OS_UNIX:
                raise LoadError("the first gzip header in the bzImage is not marked "
                                f"as compressed on Unix (OS byte {data[pos + 9]})")
            return pos
        pos = data.find(b"\x1f\x8b", pos + 1)
    raise LoadError("not an ELF or bzImage kernel (no ELF header, and no gzip-compressed "
                    "kernel inside)")
# :*


# L:410 A gzipped kernel carries no program headers, so where is PAGE_OFFSET?
# 2.6.23 guessed, and guessed well: kernel code is full of "mov <address>,
# %eax", the one-byte opcode A1 followed by a 32-bit address, and the top
# byte of a kernel address is the top byte of PAGE_OFFSET.  So it counts,
# for every A1, the byte four places later, and the first value seen for
# the fourth time wins.  For a kernel at 0xC0000000 that is 0xC0, long before
# random bytes can agree four times.
def intuit_page_offset(mv, length: int) -> int:
    """2.6.23's intuit_page_offset(): page_offset from the A1 heuristic."""
    data = bytes(mv[:length])
    counts = [0] * 256
    i = data.find(0xA1)
    while 0 <= i and i + 4 < length:
        b = data[i + 4]
        counts[b] += 1
        if counts[b] > 3:
            return b << 24
        i = data.find(0xA1, i + 1)
    raise LoadError("could not determine page offset (not an lguest kernel?)")
# :*


# L:420 Unpacking: straight into Guest memory at 1 MB, a piece at a time,
# never past the room we were given.  Whatever follows the gzip stream in
# the file (a real bzImage has more after it) is ignored, as zlib ignored it
# for 2.6.23.  When the kernel is too big we still count how big, so the
# error can say how much memory it would need.
def load_bzimage(mem, image, *, mem_size: int | None = None) -> tuple[int, int, int]:
    """Gunzip a bzImage's kernel to 1 MB.  Returns (page_offset, start, end gpa)."""
    import zlib

    pos = find_gzip_header(image)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with _bytes_view(mem) as mv, memoryview(image) as src:
        size = len(mv) if mem_size is None else min(mem_size, len(mv))
        room = max(0, size - KERNEL_GPA)
        length, overflow = 0, 0
        data = src[pos:]
        try:
            while not d.eof:
                chunk = d.decompress(data, 1 << 20)
                data = d.unconsumed_tail
                if not overflow and length + len(chunk) <= room:
                    mv[KERNEL_GPA + length:KERNEL_GPA + length + len(chunk)] = chunk
                    length += len(chunk)
                else:
                    overflow += len(chunk)
                if not chunk and not data:
                    break
        except zlib.error as e:
            raise LoadError(f"bzImage: corrupt gzip data ({e})") from None
        if not d.eof:
            raise LoadError("bzImage: the gzip data is truncated")
        if overflow:
            raise KernelTooBig(KERNEL_GPA + length + overflow)
        page_offset = intuit_page_offset(mv[KERNEL_GPA:], length)
        start = _entry_point(mv, KERNEL_GPA, KERNEL_GPA + length, page_offset)
    return page_offset, start, KERNEL_GPA + length
# :*


class KernelTooBig(LoadError):
    """The kernel needs memory up to gpa `end` and there is less room than that."""

    def __init__(self, end: int):
        super().__init__(f"kernel does not fit in memory (it ends at {end:#x})")
        self.end = end


def elf_end(image) -> int:
    """The first gpa past an ELF kernel's loaded segments (bss included)."""
    return max(paddr + extent for _, paddr, _, _, extent in _elf_segments(image))


# L:430 One entry point for any kernel: the ELF magic says vmlinux, anything
# else is tried as a bzImage, exactly 2.6.23's order.  `mem_size` is the
# room below the page tables and the initrd: a kernel that would run into
# them raises KernelTooBig, whose `end` tells the Launcher how much memory
# would have been enough.
def load_kernel(mem, image, *, mem_size: int) -> tuple[int, int, int]:
    """Load a vmlinux or bzImage; returns (page_offset, start, end gpa)."""
    if bytes(image[:4]) == b"\x7fELF":
        end = elf_end(image)
        if end > mem_size:
            raise KernelTooBig(end)
        page_offset, start = load_elf(mem, image, mem_size=mem_size)
        return page_offset, start, end
    return load_bzimage(mem, image, mem_size=mem_size)
# :*


def load_initrd_file(mem, mem_size: int, f, length: int) -> int:
    """Read `length` bytes of an open initrd file straight into the top of memory.

    Returns the page-rounded size, as load_initrd() does, without an
    intermediate copy of the file in the Launcher's memory.
    """
    size = _page_up(length)
    if size > mem_size:
        raise LoadError("initrd does not fit in memory")
    with _bytes_view(mem) as mv:
        if mem_size > len(mv):
            raise LoadError("memory size is larger than the guest memory buffer")
        base = mem_size - size
        got = 0
        while got < length:
            n = f.readinto(mv[base + got:base + length])
            if not n:
                raise LoadError("initrd: file shrank while it was being read")
            got += n
        mv[base + length:mem_size] = bytes(size - length)
    return size


def pagetable_bytes(mem_size: int, page_offset: int) -> int:
    """How much memory setup_pagetables() takes below the initrd: the PTE pages and pgdir."""
    mapped = min(mem_size, (1 << 32) - page_offset) // PAGE_SIZE
    return ((mapped + 1023) // 1024 + 1) * PAGE_SIZE
