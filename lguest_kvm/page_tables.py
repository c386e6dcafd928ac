# H:300 Shadow page tables.  The Guest believes it runs on ordinary 2-level i386 page tables, and it
# writes them itself.  The CPU never sees those: it walks "shadow" tables that the Host builds from
# them, entry by entry, on demand, checking each one.  That is how lguest kept a Guest inside its
# memory: a shadow entry can only ever point below pfn_limit.  lguest-kvm keeps exactly that scheme,
# with one twist — the vCPU is in long mode, so the shadows are 4-level tables.  For each Guest page
# directory (cr3) there is a shadow "root": a PML4 whose entry 0 points to a PDPT, whose entries 0-3
# point to four page directories covering the Guest's 4 GiB, and whose entry 4 maps the Switcher at
# 4 GiB.  One Guest PGD entry covers 4 MiB, which is two 2 MiB PD entries, so each shadow "PTE page"
# is an 8 KiB block of 1024 sixty-four-bit entries, indexed exactly like the Guest's PTE page.
#
# Guest-physical addresses are the VM's physical addresses (Guest RAM is slot 0 at gpa 0), so a shadow
# PTE holds the Guest's own page frame number: the hardware's second level (EPT/NPT, or kvm-pvm's own
# shadowing) takes it from there.
# :*
import random
import struct

from . import abi
from .switcher import (HOST_BASE, NUM_ROOTS, POOL_BLOCKS, POOL_PAGE, ROOT_PAGES, ROOTS_PAGE,
                       PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D)

_PGD_FLAGS_OK = 0x67            # P|RW|US|A|D: anything else in a Guest PGD entry is refused
_PTE_PWT, _PTE_PSE, _PTE_GLOBAL = 0x8, 0x80, 0x100
PF_WRITE, PF_USER = 2, 4


class Root:
    """One shadow page-table root: the Guest cr3 it shadows and its PTE blocks by PGD index."""

    def __init__(self, page):
        self.page = page                   # first Host-slot page: PML4, PDPT, then 4 PD pages
        self.cr3 = None                    # Guest cr3 (gpa of its page directory)
        self.blocks = {}                   # PGD index -> 8 KiB block number
        self.used = False

    @property
    def pml4(self):
        return HOST_BASE + self.page * 4096


class ShadowPages:
    """The shadow tables of one Guest, kept in the Host slot (never in Guest RAM)."""

    def __init__(self, lg):
        self.lg = lg
        hmem = lg.hmem
        self.q = memoryview(hmem).cast("Q")        # every 64-bit entry of the Host slot
        self.free_blocks = list(range(POOL_BLOCKS - 1, -1, -1))
        self.roots = [Root(ROOTS_PAGE + i * ROOT_PAGES) for i in range(NUM_ROOTS)]
        for r in self.roots:
            pml4, pdpt = r.page * 512, (r.page + 1) * 512
            self.q[pml4] = (r.pml4 + 4096) | PTE_P | PTE_RW | PTE_US
            for i in range(4):
                self.q[pdpt + i] = (r.pml4 + (2 + i) * 4096) | PTE_P | PTE_RW | PTE_US
            self.q[pdpt + 4] = lg.switcher.switcher_pdpte
        self.current = None
        self.changed = False       # a present shadow entry changed: the TLB must be flushed

    # H:310 Each Guest PGD entry i has two 2 MiB entries in its root's four contiguous PD pages, at
    # i*2 and i*2+1; each points into the block of 1024 entries that shadows the Guest's PTE page.
    # :*
    def _pd_index(self, root, idx):
        return (root.page + 2) * 512 + idx * 2

    def _block_index(self, block):
        return (POOL_PAGE + 2 * block) * 512

    def _get_block(self, root, idx, gpgd):
        block = root.blocks.get(idx)
        if block is not None:
            return block
        if not self.free_blocks:
            self.lg.kill_guest("out of memory allocating pte page")
            return None
        if (gpgd & 0xFFF) & ~_PGD_FLAGS_OK or (gpgd >> 12) >= self.lg.pfn_limit:
            self.lg.kill_guest("bad page directory entry")
            return None
        block = self.free_blocks.pop()
        root.blocks[idx] = block
        phys = HOST_BASE + (POOL_PAGE + 2 * block) * 4096
        pd = self._pd_index(root, idx)
        flags = gpgd & (PTE_P | PTE_RW | PTE_US | PTE_A)
        self.q[pd] = phys | flags
        self.q[pd + 1] = (phys + 4096) | flags
        return block

    def _release(self, root, idx):
        block = root.blocks.pop(idx)
        pd = self._pd_index(root, idx)
        self.q[pd] = self.q[pd + 1] = 0
        b = self._block_index(block)
        self.q[b:b + 1024] = _ZERO_BLOCK
        self.free_blocks.append(block)
        self.changed = True

    def flush_user_mappings(self, root):
        limit = self.lg.page_offset >> 22
        for idx in [i for i in root.blocks if i < limit]:
            self._release(root, idx)

    def flush_all(self, root):
        for idx in list(root.blocks):
            self._release(root, idx)

    # H:320 Demand paging (lguest's demand_page()).  A page fault in the Guest comes here first: if the
    # Guest's own tables allow the access, copy the entry into the shadow and let the Guest retry; if
    # not, the fault is the Guest's own and goes back to it.  Every Guest entry is checked on the way,
    # because a Guest that points a PTE past its memory is trying to escape, and that kills it.  The
    # Accessed and Dirty bits are the Host's job: it sets them in the Guest's entry, and maps a clean
    # page read-only so that the first write faults here again and the page can be marked Dirty.
    # :*
    def demand_page(self, vaddr, errcode):
        lg = self.lg
        idx = vaddr >> 22
        gpgd = lg.lgread_u32(self.current.cr3 + 4 * idx)
        if lg.dead or not gpgd & PTE_P:
            return False
        if idx >= abi.SWITCHER_PGD_INDEX:
            lg.kill_guest("attempt to access switcher pages")
            return False
        block = self._get_block(self.current, idx, gpgd)
        if block is None:
            return False
        gpte_addr = (gpgd & 0xFFFFF000) + 4 * ((vaddr >> 12) & 1023)
        gpte = lg.lgread_u32(gpte_addr)
        if lg.dead or not gpte & PTE_P:
            return False
        if (errcode & PF_WRITE and not gpte & PTE_RW) or (errcode & PF_USER and not gpte & PTE_US):
            return False
        if not self._check_gpte(gpte):
            return False
        gpte |= PTE_A | (PTE_D if errcode & PF_WRITE else 0)
        self.q[self._block_index(block) + ((vaddr >> 12) & 1023)] = self._shadow_pte(gpte)
        lg.lgwrite_u32(gpte_addr, gpte)
        return True

    def _check_gpte(self, gpte):
        lg = self.lg
        if gpte & (_PTE_PWT | _PTE_PSE) or (gpte >> 12) >= lg.pfn_limit:
            lg.kill_guest("bad page table entry")
            return False
        if (gpte >> 12) >= lg.backed_pages:
            lg.kill_guest("failed to get page %u" % (gpte >> 12))
            return False
        return True

    @staticmethod
    def _shadow_pte(gpte):
        flags = gpte & 0xFFF & ~_PTE_GLOBAL
        if not gpte & PTE_D:
            flags &= ~PTE_RW
        return (gpte & 0xFFFFF000) | flags

    def shadow_pte(self, vaddr):
        """The current root's shadow entry for vaddr (0 if none)."""
        i = self.pte_word(self.current, vaddr)
        return 0 if i is None else self.q[i]

    def pte_word(self, root, vaddr):
        """Which 64-bit word of the Host slot shadows vaddr in `root` (None: no PTE block yet)."""
        block = root.blocks.get(vaddr >> 22)
        if block is None:
            return None
        return self._block_index(block) + ((vaddr >> 12) & 1023)

    # H:330 SET_PTE: the Guest changed one of its PTEs.  For a kernel address the change goes into every
    # shadow root (the kernel's part of all page tables is the same), for a user address only into the
    # root of that page directory.  An entry the Guest has already used (Accessed or Dirty) is worth
    # copying at once, after the same checks as demand paging; any other is simply dropped and will
    # be faulted in if it is ever touched.
    # :*
    def set_pte(self, cr3, vaddr, gpte):
        if vaddr >> 22 >= abi.SWITCHER_PGD_INDEX:
            self.lg.kill_guest("attempt to access switcher pages")
            return
        if vaddr >= self.lg.page_offset:
            roots = [r for r in self.roots if r.used]
        else:
            roots = [r for r in self.roots if r.used and r.cr3 == cr3]
        for root in roots:
            block = root.blocks.get(vaddr >> 22)
            if block is None:
                continue
            i = self._block_index(block) + ((vaddr >> 12) & 1023)
            if gpte & (PTE_A | PTE_D):
                if not self._check_gpte(gpte):
                    return
                self.q[i] = self._shadow_pte(gpte)
            else:
                self.q[i] = 0
            self.changed = True

    def set_pmd(self, cr3, idx):
        if idx >= abi.SWITCHER_PGD_INDEX:
            return
        for root in self.roots:
            if root.used and root.cr3 == cr3 and idx in root.blocks:
                self._release(root, idx)

    # H:340 NEW_PGTABLE: the Guest switched page directories.  Four roots are cached; a cr3 we have
    # seen recently finds its shadow still filled in, otherwise a root is recycled at random and its
    # user part dropped (the kernel part is the same in every Guest page directory, so it stays).
    # :*
    def new_pgtable(self, cr3):
        for root in self.roots:
            if root.used and root.cr3 == cr3:
                self.switch_to(root)
                return
        root = random.choice(self.roots)
        fresh = not root.used
        root.used, root.cr3 = True, cr3
        self.flush_user_mappings(root)
        self.switch_to(root)
        if fresh:
            self.lg.pin_stack_pages()

    def switch_to(self, root):
        if root is not self.current:
            self.current = root
            self.changed = True

    def init_root(self, cr3):
        root = self.roots[0]
        root.used, root.cr3 = True, cr3
        self.current = root
        self.changed = True

    def flush_tlb(self, all_):
        if all_:
            for root in self.roots:
                self.flush_all(root)
            self.lg.pin_stack_pages()
        else:
            self.flush_user_mappings(self.current)

    # H:350 Stack pinning.  The Host writes interrupt frames onto the Guest's kernel stack, and a page
    # fault there would have nowhere to go; so the pages SET_STACK names are faulted in (as writes)
    # up front, and kept so after every flush.  A stack page in the Switcher's 4 MiB is refused as
    # such before the Guest's tables are even looked at, as 2.6.23's page_writable() did.
    # :*
    def pin_stack_pages(self, esp1, pages):
        for i in range(pages):
            vaddr = (esp1 - 1 - i * 4096) & 0xFFFFFFFF
            if vaddr >> 22 >= abi.SWITCHER_PGD_INDEX:
                self.lg.kill_guest("attempt to access switcher pages")
                return
            pte = self.shadow_pte(vaddr)
            if pte & PTE_P and pte & PTE_RW:
                continue
            if not self.demand_page(vaddr, PF_WRITE):
                self.lg.kill_guest("bad stack page %#x" % vaddr)
                return

    # H:360 The Host sometimes needs to read the Guest's memory at a virtual address (to decode the
    # instruction it trapped on, say).  It walks the Guest's own tables, read-only, with the same
    # checks as the CPU would make for a supervisor read.  None means "not mapped".
    # :*
    def guest_pa(self, vaddr):
        return walk_guest_tables(self.lg, self.current.cr3, vaddr)


def walk_guest_tables(lg, cr3, vaddr):
    """The Guest-physical address vaddr maps to in the Guest's page directory cr3, or None."""
    gpgd = lg.peek_u32(cr3 + 4 * (vaddr >> 22))
    if gpgd is None or not gpgd & PTE_P:
        return None
    gpte = lg.peek_u32((gpgd & 0xFFFFF000) + 4 * ((vaddr >> 12) & 1023))
    if gpte is None or not gpte & PTE_P:
        return None
    return (gpte & 0xFFFFF000) | (vaddr & 0xFFF)


_ZERO_BLOCK = memoryview(struct.pack("<1024Q", *([0] * 1024))).cast("Q")
