"""The Guest runtime build (launcher/guest) and the Launcher's loader (launcher/loader.py).

None of these need /dev/kvm: they check the ELF the build produces, the cache,
the loader's layout of Guest memory, and (where the kernel runs 32-bit
programs) the runtime's C code run as an ordinary i386 Linux process.
"""
import concurrent.futures
import mmap
import os
import struct
import subprocess

import pytest

from launcher import loader
from launcher.guest import build
from launcher.guest.build import GuestBuildError, build_guest
from launcher.loader import LoadError

PAGE_OFFSET = 0xC0000000
MIB = 1 << 20

HELLO = r"""
#include "lguest.h"

int main(void)
{
	lguest_init();
	printk("Hello from guest %d at %p\n", 7, (void *)&lguest_data);
	return 0;
}
"""


@pytest.fixture(scope="module", autouse=True)
def guest_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("guest-cache")
        mp.setenv("LGUEST_KVM_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def hello_elf():
    return build_guest([("hello.c", HELLO)], name="hello")


# --- a little ELF reading -------------------------------------------------

def elf_header(data):
    return struct.unpack_from("<16sHHIIIIIHHHHHH", data, 0)


def program_headers(data):
    h = elf_header(data)
    phoff, phentsize, phnum = h[5], h[9], h[10]
    return [struct.unpack_from("<IIIIIIII", data, phoff + i * phentsize) for i in range(phnum)]


def symbols(data):
    """{name: (value, size)} from the ELF's .symtab."""
    h = elf_header(data)
    shoff, shentsize, shnum = h[6], h[11], h[12]
    sections = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize)
                for i in range(shnum)]
    out = {}
    for sh in sections:
        if sh[1] != 2:                      # SHT_SYMTAB
            continue
        strtab = sections[sh[6]]
        for off in range(sh[4], sh[4] + sh[5], sh[9]):
            name, value, size, _, _, _ = struct.unpack_from("<IIIBBH", data, off)
            end = data.index(b"\0", strtab[4] + name)
            out[data[strtab[4] + name:end].decode()] = (value, size)
    return out


def vaddr_to_offset(data, vaddr):
    for p_type, off, va, _, filesz, _, _, _ in program_headers(data):
        if p_type == 1 and va <= vaddr < va + filesz:
            return off + vaddr - va
    raise AssertionError(f"{vaddr:#x} is not in the file")


# --- the build ------------------------------------------------------------

def test_guest_elf_shape(hello_elf):
    data = hello_elf.read_bytes()
    h = elf_header(data)
    assert h[0][:4] == b"\x7fELF" and h[0][4] == 1      # ELFCLASS32
    assert (h[1], h[2]) == (2, 3)                       # ET_EXEC, EM_386
    loads = [p for p in program_headers(data) if p[0] == 1]
    assert loads
    for p in loads:
        assert p[2] - p[3] == PAGE_OFFSET
    assert min(p[3] for p in loads) == 0x100000


def test_magic_string_is_right_before_the_entry_code(hello_elf):
    data = hello_elf.read_bytes()
    syms = symbols(data)
    idx = data.find(b"GenuineLguest")
    assert idx > 0 and data.count(b"GenuineLguest") == 1
    entry = syms["lguest_entry"][0]
    assert vaddr_to_offset(data, entry) == idx + 13
    assert data[idx + 13] == 0xFC                       # cld: the first entry instruction
    assert elf_header(data)[4] == entry                 # e_entry (ignored by the loader)


def test_runtime_symbols(hello_elf):
    data = hello_elf.read_bytes()
    syms = symbols(data)
    for name in ("guest_start", "lguest_init", "lguest_crash", "console_write", "printk",
                 "puts_", "memset", "memcpy", "main", "boot_params", "boot_stack_top",
                 "__bss_start", "__bss_end", "lguest_iret"):
        assert name in syms, name
    assert syms["lguest_data"][1] == 1128
    assert syms["lguest_data"][0] % 4 == 0
    start, end = syms["lguest_noirq_start"][0], syms["lguest_noirq_end"][0]
    assert syms["lguest_iret"][0] < start < end
    assert data[vaddr_to_offset(data, end - 1)] == 0xCF      # the window ends with iret
    assert syms["__bss_start"][0] <= syms["lguest_data"][0] < syms["__bss_end"][0]
    assert syms["boot_stack_top"][0] - syms["boot_stack"][0] == 16384
    assert syms["boot_stack_top"][0] % 16 == 0


def test_build_is_cached(hello_elf, monkeypatch):
    mtime = hello_elf.stat().st_mtime_ns

    def no_compiler(*a, **k):
        raise AssertionError("the compiler ran for a cached guest")

    monkeypatch.setattr(build.subprocess, "run", no_compiler)
    again = build_guest([("hello.c", HELLO)], name="hello")
    assert again == hello_elf
    assert again.stat().st_mtime_ns == mtime


def test_cache_key_follows_sources_and_flags(hello_elf):
    other = build_guest([("hello.c", HELLO + "\n/* changed */\n")], name="hello")
    flagged = build_guest([("hello.c", HELLO)], cflags=["-DSOMETHING=1"], name="hello")
    assert len({hello_elf.parent, other.parent, flagged.parent}) == 3
    assert hello_elf.parent.parent == other.parent.parent == flagged.parent.parent


def test_path_sources_assembly_and_headers(tmp_path):
    (tmp_path / "answer.h").write_text("#define ANSWER 42\n")
    (tmp_path / "main.c").write_text(
        '#include "lguest.h"\n#include "answer.h"\n'
        "int twice(int);\nint main(void) { return twice(ANSWER); }\n")
    asm = ("twice.S", "#include \"lguest.h\"\n\t.text\n\t.globl twice\ntwice:\n"
           "\tmovl 4(%esp), %eax\n\taddl %eax, %eax\n\tret\n"
           "\t.section .note.GNU-stack,\"\",@progbits\n")
    first = build_guest([tmp_path / "main.c", asm])
    assert "twice" in symbols(first.read_bytes())
    (tmp_path / "answer.h").write_text("#define ANSWER 43\n")
    assert build_guest([tmp_path / "main.c", asm]) != first


def test_concurrent_builds_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("LGUEST_KVM_CACHE", str(tmp_path))
    src = [("race.c", HELLO.replace("7,", "8,"))]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        paths = list(ex.map(lambda _: build_guest(src), range(4)))
    assert len(set(paths)) == 1 and paths[0].is_file()
    leftovers = [p for p in paths[0].parent.iterdir() if p != paths[0]]
    assert leftovers == []


def test_compile_error_is_reported():
    bad = "int main(void) { return not_declared_anywhere; }\n"
    with pytest.raises(GuestBuildError) as e:
        build_guest([("bad.c", bad)])
    assert "not_declared_anywhere" in e.value.stderr
    assert "bad.c" in str(e.value)


def test_link_error_is_reported():
    bad = "void missing_function(void);\nint main(void) { missing_function(); return 0; }\n"
    with pytest.raises(GuestBuildError) as e:
        build_guest([("link.c", bad)])
    assert "missing_function" in e.value.stderr


def test_needs_no_libgcc():
    # 64-bit division would need __udivdi3 from libgcc, which the Guest cannot have:
    # the build must fail loudly rather than produce a Guest that cannot link.
    src = ("int main(void) { volatile unsigned long long x = 1000000000000ULL, y = 3;"
           " return (int)(x / y); }\n")
    with pytest.raises(GuestBuildError) as e:
        build_guest([("div.c", src)])
    assert "__udivdi3" in e.value.stderr


def test_bad_source_names():
    with pytest.raises(GuestBuildError):
        build_guest([("../evil.c", HELLO)])
    with pytest.raises(GuestBuildError):
        build_guest([("notes.txt", HELLO)])
    with pytest.raises(GuestBuildError):
        build_guest([("ok.c", HELLO)], name="a/b")


# --- the runtime's C code, run as a 32-bit Linux process --------------------

HOSTED_DRIVER = r"""
#include "lguest.h"

char lguest_noirq_start[1], lguest_noirq_end[1];
static unsigned dma_lens[64], ndma;
static char boot_page[4096];
static char cmdline[] = "console=hvc0 x";

static long sys3(long n, long a, long b, long c)
{
	long r;
	__asm__ __volatile__("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}

unsigned long hcall(unsigned long call, unsigned long a1, unsigned long a2, unsigned long a3)
{
	if (call == LHCALL_SEND_DMA && a1 == LGUEST_CONSOLE_DMA_KEY) {
		struct lguest_dma *d = __va(a2);
		unsigned i, total = 0;

		for (i = 0; i < LGUEST_MAX_DMA_SECTIONS && d->len[i]; i++) {
			sys3(4, 1, (long)__va(d->addr[i]), d->len[i]);
			total += d->len[i];
		}
		if (d->used_len != 0)
			sys3(1, 9, 0, 0);
		d->used_len = total;
		dma_lens[ndma++ & 63] = total;
	} else if (call == LHCALL_CRASH) {
		const char *msg = __va(a1);
		sys3(4, 2, (long)msg, strlen(msg));
		sys3(4, 2, (long)"\n", 1);
		sys3(4, 2, (long)dma_lens, ndma * 4);
		sys3(1, 0, 0, 0);
	}
	return call;
}

int main(void)
{
	char big[600], dst[8];
	int n;

	printk("%d|%i|%u|%x|%X|%08x|%5d|%-5d|%05d|%lx|%lu|%ld|%s|%c|%p|%%|%10s|%-4s|\n",
	       -42, 17, 4000000000u, 0xbeefu, 0xbeefu, 0x12u, 42, 42, -42, 0xdeadbeeful,
	       4294967295ul, -2147483647L - 1, "str", 'c', (void *)0x1234, "right", "l");
	n = printk("abc\n");
	printk("n=%d zero=%d x0=%x\n", n, 0, 0u);
	printk("status %x %x boot %d\n", lguest_data.hcall_status[0],
	       lguest_data.hcall_status[63], boot_params == boot_page);
	printk("cmdline=<%s>\n", boot_cmdline());
	puts_("plain\n");
	memset(big, 'a', sizeof(big));
	big[sizeof(big) - 1] = '\n';
	console_write(big, sizeof(big));
	memcpy(dst, "xyz", 4);
	printk("mem %d %d %d %d %d\n", memcmp("abc", "abd", 3) < 0, memcmp("ab", "ab", 2),
	       strcmp(dst, "xyz"), strcmp("b", "a") > 0, (int)strlen(dst));
	big[299] = '\0';
	printk("[%s]\n", big);
	return 0;
}

void _start(void)
{
	*(unsigned *)(boot_page + 0x228) = __pa(cmdline);
	guest_start(boot_page);
}
"""


def test_runtime_c_code_hosted(tmp_path):
    """printk, console DMA, guest_start and lguest_crash, as a 32-bit Linux program."""
    (tmp_path / "driver.c").write_text(HOSTED_DRIVER)
    objs = []
    for src in (build.RT_DIR / "rt.c", tmp_path / "driver.c"):
        obj = tmp_path / (src.stem + ".o")
        subprocess.run(["gcc", *build.CFLAGS, "-DLGUEST_RT_HOSTED", "-I", str(build.RT_DIR),
                        "-c", str(src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    exe = tmp_path / "hosted"
    subprocess.run(["ld", "-m", "elf_i386", "-z", "noexecstack", "-e", "_start",
                    "-o", str(exe), *objs], check=True)
    try:
        r = subprocess.run([str(exe)], capture_output=True, timeout=20)
    except OSError as e:
        pytest.skip(f"this kernel cannot run 32-bit programs: {e}")
    assert r.returncode == 0, (r.returncode, r.stderr)
    lines = r.stdout.split(b"\n")
    assert lines[0] == (b"-42|17|4000000000|beef|BEEF|00000012|   42|42   |-0042|deadbeef|"
                        b"4294967295|-2147483648|str|c|0x00001234|%|     right|l   |")
    assert lines[1:7] == [b"abc", b"n=4 zero=0 x0=0", b"status ff ff boot 1",
                          b"cmdline=<console=hvc0 x>", b"plain", b"a" * 599]
    assert lines[7] == b"mem 1 0 0 1 3"
    assert lines[8] == b"[" + b"a" * 299 + b"]"
    msg, _, raw = r.stderr.partition(b"\n")
    assert msg == b"Power down"
    lens = list(struct.unpack(f"<{len(raw) // 4}I", raw))
    assert lens[6:9] == [256, 256, 88]                 # console_write in 256-byte pieces
    assert lens[10:] == [256, 46]                      # printk's buffer flushes when full
    assert all(0 < n <= 256 for n in lens)


# --- the loader -----------------------------------------------------------

def make_elf(segments, *, cls=1, e_type=2, machine=3, phentsize=32):
    """segments: list of (vaddr, paddr, data, memsz)."""
    phoff = 52
    off = phoff + len(segments) * 32
    ph, body = b"", b""
    for vaddr, paddr, data, memsz in segments:
        ph += struct.pack("<IIIIIIII", 1, off + len(body), vaddr, paddr, len(data),
                          memsz, 7, 0x1000)
        body += data
    ident = b"\x7fELF" + bytes([cls, 1, 1]) + bytes(9)
    eh = struct.pack("<16sHHIIIIIHHHHHH", ident, e_type, machine, 1, 0xC0100000, phoff,
                     0, 0, 52, phentsize, len(segments), 40, 0, 0)
    return eh + ph + body


def test_load_built_guest(hello_elf):
    data = hello_elf.read_bytes()
    mem = bytearray(16 * MIB)
    page_offset, start = loader.load_elf(mem, data)
    syms = symbols(data)
    assert page_offset == PAGE_OFFSET
    assert start == syms["lguest_entry"][0]
    assert mem[start - PAGE_OFFSET - 13:start - PAGE_OFFSET] == b"GenuineLguest"
    for p_type, off, _, paddr, filesz, _, _, _ in program_headers(data):
        if p_type == 1:
            assert mem[paddr:paddr + filesz] == data[off:off + filesz]
    assert not any(mem[:0x100000])


def test_load_into_mmap(hello_elf):
    with mmap.mmap(-1, 16 * MIB) as mem:
        page_offset, start = loader.load_elf(mem, hello_elf.read_bytes())
        assert mem[start - PAGE_OFFSET - 13:start - PAGE_OFFSET] == b"GenuineLguest"
        pgdir = loader.setup_pagetables(mem, 16 * MIB, 0, page_offset)
        loader.setup_boot_params(mem, 16 * MIB, b"x")
        assert pgdir == 16 * MIB - 4096
    # no memoryview was left exported: the mmap closed cleanly


def test_pagetables():
    mem = bytearray(16 * MIB)
    pgdir = loader.setup_pagetables(mem, 16 * MIB, 0, PAGE_OFFSET)
    assert pgdir == 16 * MIB - 4096
    pgd = memoryview(mem)[pgdir:pgdir + 4096].cast("I")
    linear = pgdir - 4 * 4096                   # 4096 pages need 4 PTE pages
    assert pgd[0] == 0                          # no identity mapping
    assert list(pgd[768:773]) == [linear | 7, (linear + 4096) | 7, (linear + 8192) | 7,
                                  (linear + 12288) | 7, 0]
    assert sum(1 for e in pgd if e) == 4
    ptes = memoryview(mem)[linear:pgdir].cast("I")
    assert ptes[0] == 7 and ptes[1] == 0x1007 and ptes[4095] == (4095 << 12) | 7
    assert list(ptes) == [(i << 12) | 7 for i in range(4096)]


def test_pagetables_below_initrd_and_capped_by_page_offset():
    mem = bytearray(16 * MIB)
    pgdir = loader.setup_pagetables(mem, 16 * MIB, 3 * 4096, PAGE_OFFSET)
    assert pgdir == 16 * MIB - 3 * 4096 - 4096
    # At 0xFF800000 only 8 MiB of virtual space remains: 2048 pages, 2 PTE pages.
    mem = bytearray(16 * MIB)
    pgdir = loader.setup_pagetables(mem, 16 * MIB, 0, 0xFF800000)
    pgd = memoryview(mem)[pgdir:pgdir + 4096].cast("I")
    linear = pgdir - 2 * 4096
    assert [i for i, e in enumerate(pgd) if e] == [1022, 1023]
    assert pgd[1022] == linear | 7 and pgd[1023] == (linear + 4096) | 7
    ptes = memoryview(mem)[linear:pgdir].cast("I")
    assert ptes[2047] == (2047 << 12) | 7
    # A partial last PTE page: 5 MiB of memory is 1280 pages, 2 PTE pages.
    mem = bytearray(5 * MIB)
    pgdir = loader.setup_pagetables(mem, 5 * MIB, 0, PAGE_OFFSET)
    ptes = memoryview(mem)[pgdir - 2 * 4096:pgdir].cast("I")
    assert ptes[1279] == (1279 << 12) | 7 and ptes[1280] == 0


def test_pagetables_errors():
    with pytest.raises(LoadError):
        loader.setup_pagetables(bytearray(4096), 4096, 0, PAGE_OFFSET)   # no room
    with pytest.raises(LoadError):
        loader.setup_pagetables(bytearray(MIB), 2 * MIB, 0, PAGE_OFFSET)    # buffer too small
    with pytest.raises(LoadError):
        loader.setup_pagetables(bytearray(MIB), MIB - 100, 0, PAGE_OFFSET)  # not whole pages


def test_boot_params():
    mem = bytearray(16 * MIB)
    mem[:4096] = b"\xAA" * 4096
    loader.setup_boot_params(mem, 16 * MIB, b"root=/dev/lgba quiet ")
    u8 = lambda o: mem[o]
    u32 = lambda o: struct.unpack_from("<I", mem, o)[0]
    assert u8(0x1E8) == 1
    assert struct.unpack_from("<QQI", mem, 0x2D0) == (0, 16 * MIB, 1)
    assert u32(0x228) == 0x1000
    assert mem[0x1000:0x1000 + 22] == b"root=/dev/lgba quiet \0"
    assert u32(0x23C) == 1
    assert u8(0x210) == 0 and u32(0x218) == 0 and u32(0x21C) == 0
    expect = bytearray(4096)                    # nothing else set: the old bytes are gone
    expect[0x1E8] = 1
    struct.pack_into("<QQI", expect, 0x2D0, 0, 16 * MIB, 1)
    struct.pack_into("<I", expect, 0x228, 0x1000)
    struct.pack_into("<I", expect, 0x23C, 1)
    assert mem[:4096] == expect


def test_boot_params_with_initrd():
    mem = bytearray(16 * MIB)
    loader.setup_boot_params(mem, 16 * MIB, "", initrd_size=8192)
    assert mem[0x210] == 0xFF
    assert struct.unpack_from("<II", mem, 0x218) == (16 * MIB - 8192, 8192)
    assert mem[0x1000] == 0


def test_load_initrd():
    mem = bytearray(MIB)
    size = loader.load_initrd(mem, MIB, b"x" * 5000)
    assert size == 8192
    assert mem[MIB - 8192:MIB - 8192 + 5000] == b"x" * 5000
    assert not any(mem[MIB - 8192 + 5000:])


def test_load_synthetic_two_segments():
    text = b"\x90" * 100 + b"GenuineLguest" + b"\xfc\xf4"
    elf = make_elf([(0xC0100000, 0x100000, b"\x11" * 64, 4096),
                    (0xC0200000, 0x200000, text, len(text) + 8192)])
    mem = bytearray(16 * MIB)
    assert loader.load_elf(mem, elf) == (PAGE_OFFSET, 0xC0200000 + 113)
    assert mem[0x100000:0x100040] == b"\x11" * 64
    assert mem[0x200000 + 113:0x200000 + 115] == b"\xfc\xf4"


@pytest.mark.parametrize("image, message", [
    (b"MZ\x90\x00" + bytes(100), "not an ELF"),
    (b"\x7fELF", "truncated"),
    (make_elf([(0xC0100000, 0x100000, b"GenuineLguest", 13)], cls=2), "32-bit"),
    (make_elf([(0xC0100000, 0x100000, b"GenuineLguest", 13)], e_type=3), "not an executable"),
    (make_elf([(0xC0100000, 0x100000, b"GenuineLguest", 13)], machine=62), "i386"),
    (make_elf([(0xC0100000, 0x100000, b"GenuineLguest", 13)], phentsize=56), "header size"),
    (make_elf([]), "program header count"),
    (make_elf([(0xC0100000, 0x100000, b"GenuineLguest", 13),
               (0x80200000, 0x200000, b"x", 1)]), "page offset of ELF segment 1"),
    (make_elf([(0xC2000000, 0x2000000, b"GenuineLguest", 13)]), "does not fit in memory"),
    (make_elf([(0xC0FFF000, 0xFFF000, b"GenuineLguest", 0x2000)]), "does not fit in memory"),
    (make_elf([(0xC0100000, 0x100000, b"GenuinLguest plain kernel", 25)]),
     'No "GenuineLguest" in the kernel'),
    (make_elf([(0x100000, 0x100000, b"GenuineLguest", 13)]), "page offset"),
])
def test_load_errors(image, message):
    with pytest.raises(LoadError, match=message.replace("(", r"\(")):
        loader.load_elf(bytearray(16 * MIB), image)


def test_load_error_truncated_segment():
    elf = make_elf([(0xC0100000, 0x100000, b"GenuineLguest", 13)])
    with pytest.raises(LoadError, match="past the end of the file"):
        loader.load_elf(bytearray(16 * MIB), elf[:-4])


def test_load_respects_mem_size():
    elf = make_elf([(0xC0100000, 0x100000, b"GenuineLguest", 13)])
    with pytest.raises(LoadError, match="does not fit"):
        loader.load_elf(bytearray(16 * MIB), elf, mem_size=0x100000)
    with pytest.raises(LoadError, match="read-only"):
        loader.load_elf(bytes(16 * MIB), elf)


def test_messages_are_one_line():
    for image in (b"junk", make_elf([(0xC0100000, 0x100000, b"nothing", 7)])):
        with pytest.raises(LoadError) as e:
            loader.load_elf(bytearray(4 * MIB), image)
        assert "\n" not in str(e.value)
