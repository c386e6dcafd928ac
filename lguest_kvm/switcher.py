# S:100 The Switcher.  In 2.6.23 it was a page of assembly mapped at 0xFFC00000 in both the Host and
# the Guest, which saved the Guest's registers, switched page tables and GDT, and jumped back to the
# Host kernel.  Here the Host is a userspace process, and the Switcher lives inside the VM: a few pages
# of 64-bit code, a GDT, an IDT of sixteen-byte gates and a TSS, in a memory slot of their own that is
# mapped above 4 GiB, where the Guest's 32-bit code cannot even form an address.
#
# The vCPU always runs in long mode.  The Guest's code runs in 32-bit compatibility mode at CPL 1 with
# lguest's own selectors (cs 0x61, ss 0x69), so it cannot tell it is not on a 2.6.23 Host.  When it
# traps or makes a hypercall, the CPU enters a Switcher stub at CPL 0; the stub saves the Guest's
# registers at the top of the register page, in one fixed layout, and leaves the VM with an `out` to
# our port.  Python then reads and changes the registers in memory, and on the next KVM_RUN the stub
# restores them and `iretq`s back into the Guest.
# :*
import ctypes
import struct

from . import abi
from .kvm import kvm_sregs, u64

# The Host slot's Guest-physical address, and the linear address the Switcher is mapped at: the same
# number, 4 GiB, above anything a 32-bit Guest address can reach.
HOST_BASE = 0x1_0000_0000
SWITCHER_PORT = 0x4C          # the stubs' `out %al, $0x4C`: "back to the Host, please"

# Pages of the Host slot.
STUB_PAGE, COMMON_PAGE, GDT_PAGE, IDT_PAGE, REGS_PAGE = 0, 1, 2, 3, 4
SWITCHER_PAGES = 5
SW_PD_PAGE, SW_PT_PAGE = 5, 6     # the page tables mapping those pages, shared by every root
ROOTS_PAGE = 7                    # 4 roots x (PML4, PDPT, 4 PD pages)
ROOT_PAGES = 6
NUM_ROOTS = 4
POOL_PAGE = ROOTS_PAGE + NUM_ROOTS * ROOT_PAGES
POOL_BLOCKS = 4096                # 8 KiB shadow PTE blocks: 4 roots x 1023 PGD entries
HOST_SLOT_SIZE = (POOL_PAGE + 2 * POOL_BLOCKS) * abi.PAGE_SIZE

TSS_OFFSET = 0x800                # the TSS sits in the GDT page, after the 32 descriptors
LINEAR_STUBS = HOST_BASE + STUB_PAGE * 4096
SEL_HOST_CS = abi.GDT_ENTRY_LGUEST_CS << 3      # 0x50: 64-bit code, DPL 0
SEL_HOST_DS = abi.GDT_ENTRY_LGUEST_DS << 3      # 0x58
SEL_TSS = abi.GDT_ENTRY_TSS << 3                # 0x80, a 16-byte descriptor in entries 16 and 17
HOST_GDT_ENTRIES = (abi.GDT_ENTRY_LGUEST_CS, abi.GDT_ENTRY_LGUEST_DS, abi.GDT_ENTRY_TSS,
                    abi.GDT_ENTRY_TSS + 1, abi.GDT_ENTRY_DOUBLEFAULT_TSS)

# Vectors for which the CPU pushes an error code itself.
ERRCODE_VECTORS = frozenset((8, 10, 11, 12, 13, 14, 17))


# S:110 The register frame.  The CPU pushes ss, rsp, rflags, cs, rip and (for some vectors) an error
# code onto the stack named by IST1 of the TSS — always the top of the register page, whichever ring
# the vCPU was in.  The stub adds an error code of 0 where the CPU gave none, the vector number, the
# Guest's general registers, its data segment selectors and cr2, and finally two request words the
# Host may fill in before it resumes: a new cr3 (to switch shadow page tables or flush the TLB) and a
# new cr0 (for the Guest's virtual TS flag).  lguest's struct lguest_regs, in 64-bit words.
# :*
class Frame(ctypes.LittleEndianStructure):
    _fields_ = [(n, u64) for n in (
        "cr3_req", "cr0_req", "cr2", "gs", "fs", "es", "ds",
        "edi", "esi", "ebp", "ebx", "edx", "ecx", "eax",
        "trapnum", "errcode", "eip", "cs", "eflags", "esp", "ss")]


FRAME_SIZE = ctypes.sizeof(Frame)
FRAME_OFFSET = (REGS_PAGE + 1) * abi.PAGE_SIZE - FRAME_SIZE
FRAME_LINEAR = HOST_BASE + FRAME_OFFSET
IST_TOP = HOST_BASE + (REGS_PAGE + 1) * abi.PAGE_SIZE
NMI_STACK_TOP = HOST_BASE + REGS_PAGE * abi.PAGE_SIZE + 2048     # IST2, well below the frame
SWITCHER_NMI_PORT = 0x4D
NMI_VECTOR = 2


# S:120 The code.  Each of the 256 vectors has a sixteen-byte stub: push a zero error code where the
# CPU pushes none, push the vector, jump to the common code.  The common code saves the rest, takes
# cr2, pushes two empty request words and leaves with `out`.  The next KVM_RUN continues right after
# the `out`: the resume path applies the requests, reloads the segment registers (so a changed GDT
# takes effect, as 2.6.23's Switcher did) and returns to the Guest with `iretq`.
#
# The bytes are written out by hand, so the Host needs no assembler; tests/test_switcher.py assembles
# the same instructions with binutils when it is installed and compares.
# :*
def switcher_code(bits):
    """(COMMON_SAVE, RESUME) as (assembler text, bytes) pairs, for this 64-bit Switcher or the direct
    backend's 32-bit one (direct.py): the same instructions, with a REX.W prefix in 64-bit mode
    where the operand is a whole register, and stack words of 8 or 4 bytes."""
    r, rex, w = ("r", b"\x48", 8) if bits == 64 else ("e", b"", 4)
    save = [
        (f"push %{r}ax", b"\x50"), (f"push %{r}cx", b"\x51"), (f"push %{r}dx", b"\x52"),
        (f"push %{r}bx", b"\x53"), (f"push %{r}bp", b"\x55"), (f"push %{r}si", b"\x56"),
        (f"push %{r}di", b"\x57"),
        ("mov %ds,%eax", b"\x8c\xd8"), (f"push %{r}ax", b"\x50"),
        ("mov %es,%eax", b"\x8c\xc0"), (f"push %{r}ax", b"\x50"),
        ("mov %fs,%eax", b"\x8c\xe0"), (f"push %{r}ax", b"\x50"),
        ("mov %gs,%eax", b"\x8c\xe8"), (f"push %{r}ax", b"\x50"),
        (f"mov %cr2,%{r}ax", b"\x0f\x20\xd0"), (f"push %{r}ax", b"\x50"),
        ("push $0", b"\x6a\x00"), ("push $0", b"\x6a\x00"),
        (f"out %al,${SWITCHER_PORT:#x}", bytes([0xE6, SWITCHER_PORT])),
    ]
    resume = [
        (f"pop %{r}ax", b"\x58"), (f"test %{r}ax,%{r}ax", rex + b"\x85\xc0"), ("jz 1f", b"\x74\x03"),
        (f"mov %{r}ax,%cr3", b"\x0f\x22\xd8"), (f"1: pop %{r}ax", b"\x58"),
        (f"test %{r}ax,%{r}ax", rex + b"\x85\xc0"), ("jz 2f", b"\x74\x03"),
        (f"mov %{r}ax,%cr0", b"\x0f\x22\xc0"), (f"2: add ${w},%{r}sp", rex + bytes([0x83, 0xC4, w])),
        (f"pop %{r}ax", b"\x58"), ("mov %eax,%gs", b"\x8e\xe8"),
        (f"pop %{r}ax", b"\x58"), ("mov %eax,%fs", b"\x8e\xe0"),
        (f"pop %{r}ax", b"\x58"), ("mov %eax,%es", b"\x8e\xc0"),
        (f"pop %{r}ax", b"\x58"), ("mov %eax,%ds", b"\x8e\xd8"),
        (f"pop %{r}di", b"\x5f"), (f"pop %{r}si", b"\x5e"), (f"pop %{r}bp", b"\x5d"),
        (f"pop %{r}bx", b"\x5b"), (f"pop %{r}dx", b"\x5a"), (f"pop %{r}cx", b"\x59"),
        (f"pop %{r}ax", b"\x58"), (f"add ${2 * w},%{r}sp", rex + bytes([0x83, 0xC4, 2 * w])),
        ("iretq" if bits == 64 else "iret", rex + b"\xcf"),
    ]
    return save, resume


COMMON_SAVE, RESUME = switcher_code(64)
COMMON_LINEAR = HOST_BASE + COMMON_PAGE * 4096
RESUME_LINEAR = COMMON_LINEAR + sum(len(b) for _, b in COMMON_SAVE)


# S:125 The NMI is the odd one out.  KVM can deliver it anywhere, even in the Switcher's resume path
# at CPL 0, where a frame pushed on IST1 would land on the Guest's half-restored registers.  So
# vector 2 has a stack of its own (IST2) and a stub that touches nothing: it tells the Host with an
# `out` to a port of its own, and `iretq`s straight back to wherever the NMI struck.  2.6.23's NMI
# stub did nothing but return, too.
# :*
NMI_STUB = bytes([0xE6, SWITCHER_NMI_PORT]) + b"\x48\xcf"          # out %al,$0x4d; iretq


def stub_code(vector, stubs=LINEAR_STUBS, common=COMMON_LINEAR, nmi_stub=NMI_STUB):
    """The sixteen bytes of one vector's entry stub (the same bytes in 32-bit mode, given the
    direct backend's addresses)."""
    if vector == NMI_VECTOR:
        return nmi_stub.ljust(16, b"\xcc")
    code = b"" if vector in ERRCODE_VECTORS else b"\x6a\x00"       # push $0
    code += b"\x68" + struct.pack("<I", vector)                    # push $vector
    here = stubs + vector * 16 + len(code) + 5
    code += b"\xe9" + struct.pack("<i", common - here)             # jmp common
    return code.ljust(16, b"\xcc")


def common_code(save=COMMON_SAVE, resume=RESUME):
    return b"".join(b for _, b in save + resume)


def descriptor(base, limit, typ, dpl, *, s=1, long_=0, db=1, g=1):
    """The two words of an 8-byte segment descriptor."""
    a = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    b = (((base >> 16) & 0xFF) | (typ << 8) | (s << 12) | (dpl << 13) | (1 << 15)
         | (limit & 0xF0000) | (long_ << 21) | (db << 22) | (g << 23) | (base & 0xFF000000))
    return a, b


# S:130 The host's own descriptors: 64-bit code and data for the Switcher in lguest's LGUEST_CS and
# LGUEST_DS slots (10 and 11), and the TSS.  A long-mode TSS descriptor is sixteen bytes, so it takes
# entry 17 as well as lguest's 16.  The Guest's kernel code and data start flat at DPL 1.
# :*
HOST_CS_DESC = descriptor(0, 0xFFFFF, 0xB, 0, long_=1, db=0)
HOST_DS_DESC = descriptor(0, 0xFFFFF, 0x3, 0)
INITIAL_GUEST_GDT = {abi.GDT_ENTRY_KERNEL_CS: (0x0000FFFF, 0x00CFBB00),
                     abi.GDT_ENTRY_KERNEL_DS: (0x0000FFFF, 0x00CFB300)}


def tss_descriptor():
    base = HOST_BASE + GDT_PAGE * 4096 + TSS_OFFSET
    a, b = descriptor(base & 0xFFFFFFFF, 0x67, 0x9, 0, s=0, db=0, g=0)
    return a, b, base >> 32, 0


def idt_gate(vector, dpl):
    """A 64-bit interrupt gate to the vector's stub, on IST1 (IST2 for the NMI)."""
    off = LINEAR_STUBS + vector * 16
    ist = 2 if vector == NMI_VECTOR else 1
    return struct.pack("<HHBBHII", off & 0xFFFF, SEL_HOST_CS, ist, 0x8E | (dpl << 5),
                       (off >> 16) & 0xFFFF, off >> 32, 0)


PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80


class GuestGdt:
    """The Guest's part of a Switcher's real GDT (`gdt`, two words an entry), for both Switchers:
    every entry but the Host's own (`host_entries`) is the Guest's."""

    host_entries = ()

    def load_guest_gdt(self, entries):
        """Copy the Guest's (fixed-up) GDT into the real one, keeping the Host's own entries."""
        self.gdt_generation += 1
        for i in range(abi.GDT_ENTRIES):
            if i not in self.host_entries:
                self.gdt[2 * i], self.gdt[2 * i + 1] = entries[i]

    def guest_descriptor(self, selector):
        """The (a, b) words the real GDT holds for a selector, or None for a null/LDT selector."""
        i = selector >> 3
        if i == 0 or selector & 4 or i >= abi.GDT_ENTRIES:
            return None
        return self.gdt[2 * i], self.gdt[2 * i + 1]


class Switcher(GuestGdt):
    """Lays out the Host slot: Switcher code, GDT, TSS, IDT, register page and the fixed page tables."""

    SLOT_SIZE = HOST_SLOT_SIZE
    host_entries = HOST_GDT_ENTRIES

    def __init__(self, hmem):
        self.hmem = hmem
        mv = memoryview(hmem)
        mv[STUB_PAGE * 4096:(STUB_PAGE + 1) * 4096] = b"".join(stub_code(v) for v in range(256))
        code = common_code()
        mv[COMMON_PAGE * 4096:COMMON_PAGE * 4096 + len(code)] = code
        self.gdt = (ctypes.c_uint32 * (2 * abi.GDT_ENTRIES)).from_buffer(hmem, GDT_PAGE * 4096)
        self.gdt_generation = 0       # bumped on every change: segment registers must be reloaded
        for i, (a, b) in ((abi.GDT_ENTRY_LGUEST_CS, HOST_CS_DESC), (abi.GDT_ENTRY_LGUEST_DS, HOST_DS_DESC),
                          *INITIAL_GUEST_GDT.items()):
            self.gdt[2 * i], self.gdt[2 * i + 1] = a, b
        self.gdt[32:36] = (ctypes.c_uint32 * 4)(*tss_descriptor())
        tss = GDT_PAGE * 4096 + TSS_OFFSET
        struct.pack_into("<Q", hmem, tss + 4, IST_TOP)           # rsp0
        struct.pack_into("<Q", hmem, tss + 0x24, IST_TOP)        # ist1
        struct.pack_into("<Q", hmem, tss + 0x2C, NMI_STACK_TOP)  # ist2
        struct.pack_into("<H", hmem, tss + 102, 104)             # no I/O bitmap: IN/OUT trap
        # Only the hypercall gate may be used by the Guest's own `int`; everything else is DPL 0, so a
        # software `int n` at CPL 1 or 3 raises #GP(n*8+2), exactly as on a 2.6.23 Host.
        mv[IDT_PAGE * 4096:(IDT_PAGE + 1) * 4096] = b"".join(
            idt_gate(v, abi.GUEST_PL if v == abi.LGUEST_TRAP_ENTRY else 0) for v in range(256))
        self.frame = Frame.from_buffer(hmem, FRAME_OFFSET)
        # The Switcher's pages, mapped at HOST_BASE by PDPT entry 4 of every root: code read-only,
        # the rest writable (the CPU sets accessed and busy bits), all supervisor-only.
        sw_pd = self.phys(SW_PD_PAGE)
        struct.pack_into("<Q", hmem, SW_PD_PAGE * 4096, self.phys(SW_PT_PAGE) | PTE_P | PTE_RW)
        for page in range(SWITCHER_PAGES):
            rw = 0 if page in (STUB_PAGE, COMMON_PAGE) else PTE_RW
            struct.pack_into("<Q", hmem, SW_PT_PAGE * 4096 + 8 * page, self.phys(page) | PTE_P | rw)
        self.switcher_pdpte = sw_pd | PTE_P | PTE_RW

    @staticmethod
    def phys(page):
        return HOST_BASE + page * 4096

    def guest_gate_changed(self, lg, vector, gate):
        pass                  # no 32-bit gate can go in this IDT: every trap comes to the Host

    def guest_stack_changed(self, ss1, esp1):
        pass                  # the Host switches to the Guest's kernel stack itself

    def vcpu_sregs(self, sregs, cr3, cr0):
        return switcher_sregs(sregs, cr3, cr0)


# S:140 Where the vCPU starts.  KVM_SET_SREGS puts it in long mode at CPL 0 on the first shadow root,
# with our GDT, IDT and TSS; its instruction pointer is the resume path and its stack the register
# frame, which the Host has filled with the Guest's starting registers (§6.3).  The first KVM_RUN thus
# "returns" into the Guest like every later one.  The same state is used again whenever the Host must
# re-enter the Guest from outside the Switcher (after a kvm-pvm assist that changed privilege).
# :*
CR0_PE, CR0_MP, CR0_TS, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1, 2, 8, 0x10, 0x20, 0x10000, 0x80000000
CR0_GUEST = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 0x20, 0x200, 0x400
EFER_LME, EFER_LMA = 0x100, 0x400


def _seg(seg, selector, typ, *, long_=0, db=1, s=1, g=1, base=0, limit=0xFFFFFFFF, present=1):
    seg.base, seg.limit, seg.selector, seg.type = base, limit, selector, typ
    seg.present, seg.dpl, seg.db, seg.s, seg.l, seg.g = present, selector & 3, db, s, long_, g
    seg.avl, seg.unusable = 0, 0


def switcher_sregs(sregs: kvm_sregs, cr3, cr0=CR0_GUEST):
    """Fill sregs so the vCPU sits in the Switcher at CPL 0 on shadow root `cr3`."""
    _seg(sregs.cs, SEL_HOST_CS, 0xB, long_=1, db=0)
    for name in ("ds", "es", "fs", "gs", "ss"):
        _seg(getattr(sregs, name), SEL_HOST_DS, 0x3)
    _seg(sregs.tr, SEL_TSS, 0xB, s=0, db=0, g=0, base=HOST_BASE + GDT_PAGE * 4096 + TSS_OFFSET,
         limit=0x67)
    _seg(sregs.ldt, 0, 0x2, s=0, db=0, g=0, limit=0, present=0)
    sregs.ldt.unusable = 1
    sregs.gdt.base, sregs.gdt.limit = HOST_BASE + GDT_PAGE * 4096, abi.GDT_ENTRIES * 8 - 1
    sregs.idt.base, sregs.idt.limit = HOST_BASE + IDT_PAGE * 4096, 256 * 16 - 1
    sregs.cr0, sregs.cr3, sregs.cr4 = cr0, cr3, CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
    sregs.efer = EFER_LME | EFER_LMA
    return sregs



Switcher.HOST_BASE, Switcher.RESUME_LINEAR, Switcher.FRAME_LINEAR = HOST_BASE, RESUME_LINEAR, FRAME_LINEAR
