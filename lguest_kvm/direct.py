# S:200 The direct backend: 2.6.23's own shape, on hardware virtualization.  On a host with Intel VMX
# or AMD SVM the vCPU can run 32-bit protected mode with paging, and the hardware's second level of
# translation (EPT or NPT) maps Guest-physical addresses to the Launcher's memory.  So the Guest can
# run on its *own* 2-level page tables, as a native i386 kernel does, and lguest's shadow page tables
# are not needed at all: a page the Guest's tables map is simply there, with no fault and no exit.
# Traps the Guest is allowed to take directly (a system call, say) go through the real IDT straight
# to its handler, as they did on a 2.6.23 host.  What stays is the Switcher: a page of 32-bit code,
# the GDT, IDT and TSS, and the register page, mapped at 0xFFC00000 through the Guest's page
# directory entry 1023 — the top 4 MB that a 2.6.23 Guest leaves alone for exactly this purpose.
#
# kvm-pvm cannot page in 32-bit mode (DESIGN §2.0), so this backend is for hardware KVM only; the
# tests run it in the nested test machine (hw/).  The run loop, hypercalls, interrupts and DMA are
# the same code as for the long-mode backend: they see the same register frame, field by field.
# :*
import ctypes
import struct

from . import abi
from .page_tables import walk_guest_tables
from .switcher import (SWITCHER_NMI_PORT, GuestGdt, descriptor, INITIAL_GUEST_GDT, CR0_GUEST, PTE_P, PTE_RW,
                       _seg, switcher_code, stub_code as switcher_stub_code,
                       common_code as switcher_common_code)

# S:210 The Switcher's 4 MB.  Its pages live in a memory slot of their own at Guest-physical
# 0xFFC00000, and the page table that PGD entry 1023 points to maps them at the same linear address.
# Code, GDT/TSS and IDT are read-only to everyone (CR0.WP makes that hold at CPL 0 too, and the
# Accessed bits the segment fixups set mean the CPU never needs to write the GDT); only the register
# page is writable, as in 2.6.23, where the Guest could scribble on its own saved registers too.  The
# page table page itself is not mapped.
# :*
SWITCHER_BASE = abi.SWITCHER_PGD_INDEX << 22          # 0xFFC00000: Guest-physical and linear
STUB_PAGE, COMMON_PAGE, GDT_PAGE, IDT_PAGE, REGS_PAGE, PT_PAGE = range(6)
SLOT_SIZE = 6 * abi.PAGE_SIZE
TSS_OFFSET = 0x800
SEL_HOST_CS = abi.GDT_ENTRY_LGUEST_CS << 3            # 0x50: 32-bit code, DPL 0
SEL_HOST_DS = abi.GDT_ENTRY_LGUEST_DS << 3            # 0x58
SEL_TSS = abi.GDT_ENTRY_TSS << 3                      # 0x80
HOST_GDT_ENTRIES = (abi.GDT_ENTRY_LGUEST_CS, abi.GDT_ENTRY_LGUEST_DS, abi.GDT_ENTRY_TSS)
SWITCHER_PDE = SWITCHER_BASE + PT_PAGE * abi.PAGE_SIZE | PTE_P | PTE_RW


def linear(page, offset=0):
    return SWITCHER_BASE + page * abi.PAGE_SIZE + offset


# S:220 The register frame is 2.6.23's struct lguest_regs, 32-bit words this time, in the same order
# as the long-mode frame's 64-bit ones: the CPU pushes ss, esp, eflags, cs, eip (and an error code)
# onto the stack the TSS names for ring 0 — the top of the register page — and the stub pushes the
# rest.  A trap always comes from ring 1 or 3, so the CPU always switches stacks and the frame is
# always whole.
# :*
class Frame32(ctypes.LittleEndianStructure):
    _fields_ = [(n, ctypes.c_uint32) for n in (
        "cr3_req", "cr0_req", "cr2", "gs", "fs", "es", "ds",
        "edi", "esi", "ebp", "ebx", "edx", "ecx", "eax",
        "trapnum", "errcode", "eip", "cs", "eflags", "esp", "ss")]


FRAME_OFFSET = (REGS_PAGE + 1) * abi.PAGE_SIZE - ctypes.sizeof(Frame32)
FRAME_LINEAR = SWITCHER_BASE + FRAME_OFFSET
STACK_TOP = linear(REGS_PAGE + 1)

# S:230 The code is the long-mode Switcher's, generated for 32 bits (switcher_code()): a sixteen-byte
# stub per vector, common code that saves the registers and leaves with `out`, and a resume path
# that applies the cr3 and cr0 requests, reloads the data segments and `iret`s.  The NMI stub says
# so with an `out` of its own and returns to wherever the NMI struck: at ring 0 that pushes below
# the stack pointer, onto frame words the Switcher has already used up or not yet written.
# :*
COMMON_SAVE, RESUME = switcher_code(32)
NMI_STUB = bytes([0xE6, SWITCHER_NMI_PORT]) + b"\xcf"            # out %al,$0x4d; iret
COMMON_LINEAR = linear(COMMON_PAGE)
RESUME_LINEAR = COMMON_LINEAR + sum(len(b) for _, b in COMMON_SAVE)


def stub_code(vector):
    """The sixteen bytes of one vector's 32-bit entry stub."""
    return switcher_stub_code(vector, linear(STUB_PAGE), COMMON_LINEAR, NMI_STUB)


def common_code():
    return switcher_common_code(COMMON_SAVE, RESUME)


def stub_gate(vector):
    """The (lo, hi) words of a 32-bit interrupt gate to the vector's stub.  Only the hypercall gate
    may be used by the Guest's own `int` (DPL 1); a software `int` on any other stub vector raises
    #GP(vector*8+2), exactly as on a 2.6.23 Host."""
    off = linear(STUB_PAGE, vector * 16)
    dpl = abi.GUEST_PL if vector == abi.LGUEST_TRAP_ENTRY else 0
    return (SEL_HOST_CS << 16) | (off & 0xFFFF), (off & 0xFFFF0000) | 0x8E00 | (dpl << 13)


HOST_CS_DESC = descriptor(0, 0xFFFFF, 0xB, 0)          # 32-bit flat code and data at DPL 0, and a
HOST_DS_DESC = descriptor(0, 0xFFFFF, 0x3, 0)          # busy 32-bit TSS, in lguest's own GDT slots
TSS_DESC = descriptor(linear(GDT_PAGE, TSS_OFFSET), 0x67, 0xB, 0, s=0, db=0, g=0)


class Switcher32(GuestGdt):
    """Lays out the direct backend's Switcher slot: code, GDT, TSS, IDT, register page, page table."""

    host_entries = HOST_GDT_ENTRIES

    HOST_BASE = SWITCHER_BASE
    SLOT_SIZE = SLOT_SIZE
    RESUME_LINEAR = RESUME_LINEAR
    FRAME_LINEAR = FRAME_LINEAR

    def __init__(self, hmem):
        self.hmem = hmem
        mv = memoryview(hmem)
        mv[0:abi.PAGE_SIZE] = b"".join(stub_code(v) for v in range(256))
        code = common_code()
        mv[COMMON_PAGE * 4096:COMMON_PAGE * 4096 + len(code)] = code
        self.gdt = (ctypes.c_uint32 * (2 * abi.GDT_ENTRIES)).from_buffer(hmem, GDT_PAGE * 4096)
        self.idt = (ctypes.c_uint32 * 512).from_buffer(hmem, IDT_PAGE * 4096)
        self.gdt_generation = 0
        host = {abi.GDT_ENTRY_LGUEST_CS: HOST_CS_DESC, abi.GDT_ENTRY_LGUEST_DS: HOST_DS_DESC,
                abi.GDT_ENTRY_TSS: TSS_DESC}
        for i, (a, b) in (*host.items(), *INITIAL_GUEST_GDT.items()):
            self.gdt[2 * i], self.gdt[2 * i + 1] = a, b
        self.tss = GDT_PAGE * 4096 + TSS_OFFSET
        struct.pack_into("<II", hmem, self.tss + 4, STACK_TOP, SEL_HOST_DS)     # esp0, ss0
        struct.pack_into("<H", hmem, self.tss + 102, 104)                      # no I/O bitmap
        for v in range(256):
            self.idt[2 * v], self.idt[2 * v + 1] = stub_gate(v)
        self.frame = Frame32.from_buffer(hmem, FRAME_OFFSET)
        for page in range(PT_PAGE):
            rw = PTE_RW if page == REGS_PAGE else 0
            struct.pack_into("<I", hmem, PT_PAGE * 4096 + 4 * page, linear(page) | PTE_P | rw)

    # S:240 Direct traps, for real this time.  When the Guest sets a gate that 2.6.23 would have taken
    # directly (a trap gate below 32 or for 0x80, not 7, 13, 14 or the hypercall: the rule is in
    # interrupts_and_traps.direct_trap()), the real IDT gets the Guest's own gate — its handler, its
    # kernel code segment at ring 1, its DPL — and the CPU delivers the trap with no exit at all.
    # From user mode the CPU switches to the kernel stack in the TSS's ring-1 slot, which SET_STACK
    # fills in.  Every other vector keeps its stub.
    # :*
    def guest_gate_changed(self, lg, vector, gate):
        if vector < 256:
            self.idt[2 * vector], self.idt[2 * vector + 1] = gate if gate else stub_gate(vector)

    def guest_stack_changed(self, ss1, esp1):
        struct.pack_into("<II", self.hmem, self.tss + 12, esp1, ss1)

    def vcpu_sregs(self, sregs, cr3, cr0):
        """Fill sregs so the vCPU sits in the Switcher at CPL 0, in 32-bit protected mode with paging
        on the Guest's own page directory `cr3`."""
        _seg(sregs.cs, SEL_HOST_CS, 0xB)
        for name in ("ds", "es", "fs", "gs", "ss"):
            _seg(getattr(sregs, name), SEL_HOST_DS, 0x3)
        # TR holds a busy TSS, as VMX insists; hw/qemu carries the fix that lets QEMU's SVM accept it.
        _seg(sregs.tr, SEL_TSS, 0xB, s=0, db=0, g=0, base=linear(GDT_PAGE, TSS_OFFSET), limit=0x67)
        _seg(sregs.ldt, 0, 0x2, s=0, db=0, g=0, limit=0, present=0)
        sregs.ldt.unusable = 1
        sregs.gdt.base, sregs.gdt.limit = linear(GDT_PAGE), abi.GDT_ENTRIES * 8 - 1
        sregs.idt.base, sregs.idt.limit = linear(IDT_PAGE), 256 * 8 - 1
        sregs.cr0, sregs.cr3, sregs.cr4 = cr0, cr3, CR4_OSFXSR | CR4_OSXMMEXCPT
        sregs.efer = 0
        return sregs


CR4_OSFXSR, CR4_OSXMMEXCPT = 0x200, 0x400
assert CR0_GUEST & 0x80000000


# H:380 Page tables in the direct backend.  The hypercalls that kept lguest's shadows in step with
# the Guest's tables now only tell the CPU: SET_PTE, SET_PMD and FLUSH_TLB ask the Switcher to reload
# cr3 on the way back in (which flushes the TLB), and NEW_PGTABLE loads the new page directory —
# after the Host has put the Switcher's entry into its slot 1023, which every page directory the
# Guest switches to must have.  Nothing is filled on demand: a #PF that reaches the Host is one the
# Guest's own tables did not satisfy, and it goes back to the Guest.
#
# Threat model.  Here the Guest writes the tables the CPU walks, so it can map any Guest-physical
# page it likes, anywhere, writable — including the Switcher's pages, so it can rewrite the IDT or
# the Switcher's code and run at CPL 0.  That reaches no further than the VM: the VM's
# Guest-physical space holds only its RAM slot (pfn_limit pages of the Launcher's buffer; anything
# past it has no memory behind it, and touching it ends KVM_RUN with an exit the Host kills the
# Guest for) and this Guest's own Switcher slot.  CPL 0 in the VM gives it the VM's privileged
# instructions, which KVM virtualizes; its port I/O other than our two ports kills it.  What the Host
# reads back from the register page is untrusted either way, as it was in 2.6.23, and checked
# before use; no other Guest and nothing of the Host process is mapped into the VM.
# :*
class DirectRoot:
    """What cr3 holds: here simply the Guest's own page directory."""

    def __init__(self, cr3):
        self.cr3 = self.pml4 = cr3


class DirectPages:
    """Page-table hypercalls for a Guest that runs on its own tables."""

    def __init__(self, lg):
        self.lg = lg
        self.current = None
        self.changed = False          # the Switcher must reload cr3 before resuming the Guest

    def install_switcher(self, pgdir):
        if pgdir & 0xFFF or not self.lg.poke_u32(pgdir + 4 * abi.SWITCHER_PGD_INDEX, SWITCHER_PDE):
            self.lg.kill_guest("bad page directory %#x" % pgdir)
            return False
        return True

    def init_root(self, pgdir):
        if self.install_switcher(pgdir):
            self.current = DirectRoot(pgdir)
        else:
            self.current = DirectRoot(0)
        self.changed = True

    def new_pgtable(self, pgdir):
        if self.install_switcher(pgdir):
            self.current = DirectRoot(pgdir)
            self.changed = True
            self.lg.pin_stack_pages()

    def set_pte(self, cr3, vaddr, gpte):
        if vaddr >> 22 >= abi.SWITCHER_PGD_INDEX:
            self.lg.kill_guest("attempt to access switcher pages")
            return
        self.changed = True

    def set_pmd(self, cr3, idx):
        if idx >= abi.SWITCHER_PGD_INDEX:
            self.install_switcher(cr3)          # the Guest's slot 1023 is ours
        self.changed = True

    def flush_tlb(self, all_):
        self.changed = True

    def demand_page(self, vaddr, errcode):
        return False

    # H:385 Nothing is pinned, since nothing is filled in behind the Guest's back; but the kernel
    # stack SET_STACK names must be mapped writable in the Guest's tables, below pfn_limit and
    # outside the Switcher's 4 MB, or the CPU could not push a direct trap's frame there.  The same
    # checks and the same kill messages as lguest's stack pinning.
    # :*
    def pin_stack_pages(self, esp1, pages):
        for i in range(pages):
            vaddr = (esp1 - 1 - i * abi.PAGE_SIZE) & 0xFFFFFFFF
            if vaddr >> 22 >= abi.SWITCHER_PGD_INDEX:
                self.lg.kill_guest("attempt to access switcher pages")
                return
            if not self.writable(vaddr):
                self.lg.kill_guest("bad stack page %#x" % vaddr)
                return

    def writable(self, vaddr):
        lg = self.lg
        pgd = lg.peek_u32(self.current.cr3 + 4 * (vaddr >> 22))
        if pgd is None or pgd & (PTE_P | PTE_RW) != PTE_P | PTE_RW:
            return False
        pte = lg.peek_u32((pgd & 0xFFFFF000) + 4 * ((vaddr >> 12) & 1023))
        return (pte is not None and pte & (PTE_P | PTE_RW) == PTE_P | PTE_RW
                and pte >> 12 < lg.backed_pages)

    def guest_pa(self, vaddr):
        return walk_guest_tables(self.lg, self.current.cr3, vaddr)


# H:390 A signal stops the vCPU wherever it is.  In the Guest (ring 1 or 3) its registers go into the
# frame as a trap would have left them, and the vCPU is sent back through the Switcher's resume path
# next time, which restores them from the frame — with whatever the Host changed meanwhile, such as
# an interrupt it injected.  At ring 0 it was in the Switcher, which is left to finish.
# :*
def save_vcpu(lg, trapnum):
    regs, sregs = lg.vm.get_regs(), lg.vm.get_sregs()
    if sregs.cs.selector & 3 == 0:
        return None
    f = lg.frame
    f.cr3_req = f.cr0_req = 0
    f.cr2 = sregs.cr2 & 0xFFFFFFFF
    f.gs, f.fs, f.es, f.ds = sregs.gs.selector, sregs.fs.selector, sregs.es.selector, sregs.ds.selector
    f.edi, f.esi, f.ebp, f.ebx = regs.rdi, regs.rsi, regs.rbp, regs.rbx
    f.edx, f.ecx, f.eax = regs.rdx, regs.rcx, regs.rax
    f.trapnum, f.errcode = trapnum, 0
    f.eip, f.cs, f.eflags = regs.rip, sregs.cs.selector, regs.rflags
    f.esp, f.ss = regs.rsp, sregs.ss.selector
    lg.in_switcher = False
    return regs
