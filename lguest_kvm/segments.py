# H:600 Segments.  The Guest keeps a GDT like any i386 kernel, but the real GDT belongs to the
# Switcher, so the Guest hands its entries over with LOAD_GDT (all 32) or LOAD_TLS (the three
# thread-local entries) and the Host copies them in.  Entries 10, 11, 16, 17 and 31 are the Host's
# own and are never taken from the Guest.
# :*
import struct

from . import abi

_DPL_MASK, _DPL1, _ACCESSED = 0x6000, 0x2000, 0x100
_SYSTEM_S_BIT, _PRESENT, _LONG = 0x1000, 0x8000, 0x200000


# H:610 The fixups.  The Guest runs at privilege level 1, so a segment it marked DPL 0 would be out of
# its reach: such entries become DPL 1.  Every entry gets its Accessed bit set, so the CPU never has
# to write to the GDT.  That is all 2.6.23 did; in long mode two more things are needed, because the
# CPU would honour them and the Guest could use them to step outside its 32-bit world: the L bit is
# cleared (a 64-bit code segment at CPL 1 could reach the Switcher above 4 GiB), and system
# descriptors (call gates, TSS, LDT — none of which a Guest may have) are marked not present, so
# loading one faults in the Guest like any bad selector.
# :*
def fixup_gdt_entry(a, b):
    if b & _DPL_MASK == 0:
        b |= _DPL1
    b |= _ACCESSED
    b &= ~_LONG
    if not b & _SYSTEM_S_BIT:
        b &= ~_PRESENT
    return a, b


def _copy_entries(lg, gpa, first, num):
    raw = lg.lgread(gpa, num * 8)
    if lg.dead is not None:
        return
    for i, (a, b) in enumerate(struct.iter_unpack("<II", raw)):
        lg.gdt[first + i] = (a, b)
    for i in range(abi.GDT_ENTRIES):
        lg.gdt[i] = fixup_gdt_entry(*lg.gdt[i])
    lg.switcher.load_guest_gdt(lg.gdt)


def load_guest_gdt(lg, gpa, num):
    if num > abi.GDT_ENTRIES:
        # 2.6.23.17 carried on and overran its copy here; we stop.  It printed the u32 with %i.
        lg.kill_guest("too many gdt entries %d" % (num - (1 << 32) if num & 0x80000000 else num))
        return
    _copy_entries(lg, gpa, 0, num)


def guest_load_tls(lg, gpa):
    _copy_entries(lg, gpa, abi.GDT_ENTRY_TLS_MIN, abi.GDT_ENTRY_TLS_ENTRIES)
