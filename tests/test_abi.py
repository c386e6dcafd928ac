"""The 2.6.23 structures the Guest, Launcher and Host share, pinned to their i386 layouts."""
import ctypes

from lguest_kvm import abi


def test_lguest_data_layout():
    d = abi.lguest_data
    assert ctypes.sizeof(d) == 1128
    assert (d.irq_enabled.offset, d.blocked_interrupts.offset, d.cr2.offset, d.time.offset) == (0, 4, 8, 0xC)
    assert d.hcall_status.offset == 0x14 and d.hcalls.offset == 0x54
    assert d.reserve_mem.offset == 0x454 and d.guestid.offset == 0x458
    assert d.tsc_khz.offset == 0x45C and d.noirq_start.offset == 0x460 and d.noirq_end.offset == 0x464


def test_dma_and_device_layouts():
    assert ctypes.sizeof(abi.lguest_dma) == 100
    assert abi.lguest_dma.addr.offset == 4 and abi.lguest_dma.len.offset == 68
    assert ctypes.sizeof(abi.lguest_device_desc) == 12
    assert ctypes.sizeof(abi.lguest_block_page) == 20


def test_numbers():
    assert (abi.LHREQ_INITIALIZE, abi.LHREQ_GETDMA, abi.LHREQ_IRQ, abi.LHREQ_BREAK) == (0, 1, 2, 3)
    assert abi.LHCALL_LOAD_TLS == 16 and abi.LHCALL_BIND_DMA == 12 and abi.LHCALL_HALT == 10
    assert abi.GUEST_CS == 0x61 and abi.GUEST_DS == 0x69
    assert abi.RESERVE_MEM == 0x400000
