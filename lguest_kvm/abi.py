# P:010 The numbers everyone agrees on.  The Guest kernel, the Launcher and the Host speak one ABI,
# frozen as Linux 2.6.23 left it (include/linux/lguest.h and lguest_launcher.h): the requests the
# Launcher writes to /dev/lguest, the hypercalls the Guest makes with `int $0x1F`, and the few
# structures they share through Guest memory.  Every structure here is made of fixed-width fields so
# its layout is the 32-bit Guest's, whatever machine runs the Host; tests pin each size and offset.
# :*
import ctypes

u8, u16, u32, i32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_int32

# Requests: the first word of every write() to /dev/lguest.
LHREQ_INITIALIZE, LHREQ_GETDMA, LHREQ_IRQ, LHREQ_BREAK = 0, 1, 2, 3

# Hypercalls: eax of the Guest's `int $0x1F`.  Number 11 was GET_WALLCLOCK before 2.6.23 removed it.
LHCALL_FLUSH_ASYNC = 0
LHCALL_LGUEST_INIT = 1
LHCALL_CRASH = 2
LHCALL_LOAD_GDT = 3
LHCALL_NEW_PGTABLE = 4
LHCALL_FLUSH_TLB = 5
LHCALL_LOAD_IDT_ENTRY = 6
LHCALL_SET_STACK = 7
LHCALL_TS = 8
LHCALL_SET_CLOCKEVENT = 9
LHCALL_HALT = 10
LHCALL_BIND_DMA = 12
LHCALL_SEND_DMA = 13
LHCALL_SET_PTE = 14
LHCALL_SET_PMD = 15
LHCALL_LOAD_TLS = 16

LGUEST_TRAP_ENTRY = 0x1F
LHCALL_RING_SIZE = 64
LGUEST_IRQS = 32
LGUEST_MAX_DMA = 32
LGUEST_MAX_DMA_SECTIONS = 16
LGUEST_CONSOLE_DMA_KEY = 0
MAX_LGUEST_GUESTS = 16
RESERVE_MEM = 4 * 1024 * 1024
SWITCHER_PGD_INDEX = 1023          # 0xFFC00000: the Guest reserved the top 4 MB for the Switcher
PAGE_SIZE = 4096
X86_EFLAGS_IF = 0x200

# The Guest's selectors (include/asm-i386/segment.h), used with RPL 1.
GDT_ENTRIES = 32
GDT_ENTRY_TLS_MIN = 6
GDT_ENTRY_TLS_ENTRIES = 3
GDT_ENTRY_LGUEST_CS, GDT_ENTRY_LGUEST_DS = 10, 11
GDT_ENTRY_KERNEL_CS, GDT_ENTRY_KERNEL_DS = 12, 13
GDT_ENTRY_TSS = 16
GDT_ENTRY_DOUBLEFAULT_TSS = 31
GUEST_PL = 1
GUEST_CS = (GDT_ENTRY_KERNEL_CS << 3) | GUEST_PL      # 0x61
GUEST_DS = (GDT_ENTRY_KERNEL_DS << 3) | GUEST_PL      # 0x69
FIRST_EXTERNAL_VECTOR = 0x20
SYSCALL_VECTOR = 0x80


class Struct32(ctypes.LittleEndianStructure):
    _pack_ = 4


class timespec32(Struct32):
    _fields_ = [("tv_sec", i32), ("tv_nsec", i32)]


class hcall_args(Struct32):
    _fields_ = [("eax", u32), ("edx", u32), ("ebx", u32), ("ecx", u32)]


class lguest_data(Struct32):
    """The page of state the Guest shares with the Host (2.6.23 layout: 1128 bytes)."""
    _fields_ = [("irq_enabled", u32), ("blocked_interrupts", u32), ("cr2", u32),
                ("time", timespec32), ("hcall_status", u8 * LHCALL_RING_SIZE),
                ("hcalls", hcall_args * LHCALL_RING_SIZE), ("reserve_mem", u32),
                ("guestid", u16), ("_pad", u16), ("tsc_khz", u32),
                ("noirq_start", u32), ("noirq_end", u32)]


class lguest_dma(Struct32):
    """One DMA buffer description: up to 16 sections, the first zero length ends the list."""
    _fields_ = [("used_len", u32), ("addr", u32 * LGUEST_MAX_DMA_SECTIONS),
                ("len", u16 * LGUEST_MAX_DMA_SECTIONS)]


class lguest_device_desc(Struct32):
    _fields_ = [("type", u16), ("features", u16), ("status", u16), ("num_pages", u16), ("pfn", u32)]


class lguest_block_page(Struct32):
    _fields_ = [("type", i32), ("sector", u32), ("bytes", u32), ("result", i32), ("num_sectors", u32)]
