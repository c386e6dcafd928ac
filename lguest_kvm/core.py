# H:100 The Host's heart: one Guest, its memory, and the loop that runs it.  A `Guest` is 2.6.23's
# struct lguest: the Launcher's memory, pfn_limit and page_offset, the register frame, the shadow
# page tables, the Guest's GDT and IDT, its pending interrupts and DMA, and the reason it died.
#
# Guest RAM is the Launcher's own buffer, mapped into the VM as memory slot 0 at Guest-physical 0.
# The Host reaches it only through the accessors below (lguest's lgread/lgwrite), which check every
# range against pfn_limit and kill the Guest for a bad one, exactly as 2.6.23's lguest_address_ok()
# did.  They use a memoryview and struct, never a loop over bytes.
# :*
import errno
import mmap
import os
import struct
import time

from . import abi
from .kvm import VM, KVM_EXIT_IO, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_SHUTDOWN, KVM_EXIT_FAIL_ENTRY, \
    KVM_EXIT_INTR, KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MMIO, kvm_run, kvm_run_raw, kvm_sregs
from .switcher import (Switcher, SWITCHER_PORT, SWITCHER_NMI_PORT, CR0_GUEST, CR0_TS,
                       INITIAL_GUEST_GDT)
from .page_tables import ShadowPages
from . import assist, direct, hostwide, hypercalls, interrupts_and_traps, io, memory as guest_memory
from . import stats
from . import segments  # noqa: F401  (hypercalls reach it; listed for the reader)
from .kick import Kicker

RAM_SLOT, HOST_SLOT = 0, 1
TRAP_IN_SWITCHER = 256        # 2.6.23's marker: a fault inside the Switcher itself
TRAP_KICKED = 0x1FE           # the vCPU was stopped by a signal, not by a trap


class Guest:
    """The Host's state for one Guest (2.6.23's struct lguest)."""

    def __init__(self, kvm, memory, guestid, pfn_limit, pgdir, start, page_offset, paging="shadow"):
        self.kvm = kvm
        self.paging = paging
        self.guestid = guestid
        self.pfn_limit = pfn_limit
        self.page_offset = page_offset
        self.mem = memoryview(memory).cast("B")
        self.keys = guest_memory.KeyCache(guest_memory.buffer_address(memory))
        self.nonce = int.from_bytes(os.urandom(8), "little")
        self.registered = False
        # Pages the Launcher's buffer really backs; a Guest PTE beyond them cannot be mapped.
        self.backed_pages = min(len(self.mem) // 4096, pfn_limit, 1 << 20)
        if paging == "direct":          # the Switcher's slot sits at 0xFFC00000 in Guest-physical space
            self.backed_pages = min(self.backed_pages, direct.SWITCHER_BASE >> 12)
        self.dead = None                      # the death message, once killed
        self.lguest_data = None               # gpa of struct lguest_data after LGUEST_INIT
        self.noirq_start = self.noirq_end = 0
        self.next_hcall = 0
        self.dma_is_pending = False
        self.dma_reported = False             # read() returned the pending DMA to the Launcher
        self.pending_dma = self.pending_key = 0
        self.irqs_pending = 0
        self.halted = False
        self.break_out = False
        self.ts = 0
        self.ss1, self.esp1, self.stack_pages = 0, 0, 0
        self.gdt = [(0, 0)] * abi.GDT_ENTRIES
        for i, desc in INITIAL_GUEST_GDT.items():
            self.gdt[i] = desc
        self.idt = [(0, 0)] * 64
        self.syscall_idt = (0, 0)
        self.exits = {}                       # exit counts by vector, for benchmarks
        self.needs_assists = kvm.kind == "kvm-pvm" and paging == "shadow"
        self.dma = [None] * abi.LGUEST_MAX_DMA  # BIND_DMA records
        self.dma_latest = {}                    # GETDMA's memory of them (io.get_dma)
        self.timer_deadline = None            # monotonic ns when the clock event fires
        self.mid_switcher = False             # a signal stopped the vCPU inside the Switcher
        self.window_tried = False             # an exit at the Guest's interrupt window was asked for
        self.trap_to_handle = False           # the frame holds a trap the run loop has not dealt with
        self.step = None                      # what the run loop is in the middle of, if anything
        self.stats = None                     # a stats.ExitStats when the Launcher wants them
        self.kicker = None
        self.assists = 0                      # kvm-pvm instruction assists
        self.direct_traps = 0                 # traps 2.6.23 took without the Host, taken by it
        self.vm = None
        # The two backends differ, once running, in two things only: how a vCPU that stopped in
        # the Guest (not at a trap) is saved into the frame, and how the Guest is resumed from it.
        # (Plain functions of the Guest, not bound methods: nothing here refers back to self.)
        if paging == "direct":
            switcher_class = direct.Switcher32
            self.save_stopped_vcpu, self.resume_guest = direct.save_vcpu, Guest.enter_via_switcher
        else:
            switcher_class = Switcher
            self.save_stopped_vcpu, self.resume_guest = assist.save_stopped_vcpu, assist.resume
        self.hmem = mmap.mmap(-1, switcher_class.SLOT_SIZE)
        try:
            self.vm = VM(kvm)
            self.kicker = Kicker(self.vm)
            self.vm.run.exit_reason = EXIT_NONE
            self.tsc_khz = host_tsc_khz(self.vm)
            if self.backed_pages:
                self.vm.set_memory(RAM_SLOT, 0, memory, self.backed_pages * 4096)
            self.vm.set_memory(HOST_SLOT, switcher_class.HOST_BASE, self.hmem, switcher_class.SLOT_SIZE)
            self.register_hostwide(memory)
            self.switcher = switcher_class(self.hmem)
            self.frame = self.switcher.frame
            # The object the page-table hypercalls talk to: lguest's shadow tables, or, in the direct
            # backend, the little that is left of them when the CPU walks the Guest's own tables.
            self.shadow = direct.DirectPages(self) if paging == "direct" else ShadowPages(self)
            self.shadow.init_root(pgdir)
            self.kvm_regs = None              # the vCPU's registers after a kvm-pvm exit
            self._setup_regs(start)
        except BaseException:
            self.release()
            raise

    # H:110 The Guest's first registers (2.6.23 setup_regs): everything zero except the kernel code and
    # data selectors, interrupts enabled, and EIP at `start`.  esi = 0 tells the Guest its boot
    # parameters are at Guest-physical 0.  They go into the register frame, and the vCPU starts in the
    # Switcher's resume path, which "returns" into the Guest.
    # :*
    def _setup_regs(self, start):
        f = self.frame
        f.cs, f.ds, f.es, f.ss = abi.GUEST_CS, abi.GUEST_DS, abi.GUEST_DS, abi.GUEST_DS
        f.eflags, f.eip = 0x202, start
        self.enter_via_switcher()

    def enter_via_switcher(self):
        """Point the vCPU at the Switcher's resume path with the frame as its stack."""
        sregs = self.switcher.vcpu_sregs(self.vm.get_sregs(kvm_sregs()), self.shadow.current.pml4,
                                         self.guest_cr0())
        self.vm.set_sregs(sregs)
        regs = self.vm.get_regs()
        regs.rip, regs.rsp, regs.rflags = self.switcher.RESUME_LINEAR, self.switcher.FRAME_LINEAR, 0x2
        self.vm.set_regs(regs)
        self.in_switcher = True
        self.shadow.changed = False
        self.loaded_cr3, self.loaded_ts = self.shadow.current.pml4, self.ts

    # H:115 Telling the other Guests on this host where this one's memory is and which thread runs it,
    # so that a DMA to a shared key can reach it (hostwide.py).
    # :*
    def register_hostwide(self, memory):
        memfd = guest_memory.memfd_of(memory)
        fd, size = memfd if memfd else (-1, 0)
        self.registry = hostwide.registry()
        self.registry.register(self.guestid, self.nonce, fd, size, self.pfn_limit, self.kicker.tid)
        self.registered = True

    def collect_remote(self):
        """IRQs other Guests raised for us, and a death one of them passed on us."""
        if not self.registry.anything_for(self.guestid):
            return
        self.step = "collecting other Guests' interrupts"
        irqs, msg = self.registry.collect(self.guestid, self.nonce)
        self.irqs_pending |= irqs
        self.step = None
        if msg is not None:
            self.kill_guest(msg)

    def guest_cr0(self):
        return CR0_GUEST | (CR0_TS if self.ts else 0)

    # H:120 Killing the Guest.  A misbehaving Guest is never an error for the Host: we write down why it
    # died (only the first reason counts), the run loop notices and stops, and the Launcher's next
    # read() gets the reason.
    # :*
    def kill_guest(self, msg):
        if self.dead is None:
            self.dead = msg

    # H:130 lguest_address_ok(): the range must end below pfn_limit, strictly, and not wrap.  The
    # Launcher's own pages live at and above pfn_limit, and the Host's pages are not in this buffer.
    # :*
    def address_ok(self, addr, length):
        end = addr + length
        return end <= 0xFFFFFFFF and end // 4096 < self.pfn_limit and end <= len(self.mem)

    def lgread(self, addr, length):
        """Guest bytes at a gpa, or zeros (and a dead Guest) if the range is bad."""
        if not self.address_ok(addr, length):
            self.kill_guest("bad read address %#x len %u" % (addr, length))
            return bytes(length)
        return bytes(self.mem[addr:addr + length])

    def lgwrite(self, addr, data):
        if not self.address_ok(addr, len(data)):
            self.kill_guest("bad write address %#x len %u" % (addr, len(data)))
            return
        self.mem[addr:addr + len(data)] = data

    def lgread_u32(self, addr):
        if not self.address_ok(addr, 4):
            self.kill_guest("bad read address %#x" % addr)
            return 0
        return _U32.unpack_from(self.mem, addr)[0]

    def lgwrite_u32(self, addr, value):
        if not self.address_ok(addr, 4):
            self.kill_guest("bad write address %#x" % addr)
            return
        _U32.pack_into(self.mem, addr, value & 0xFFFFFFFF)

    def peek_u32(self, addr):
        """A read that kills nobody: None when the range is bad."""
        if not self.address_ok(addr, 4):
            return None
        return _U32.unpack_from(self.mem, addr)[0]

    def poke_u32(self, addr, value):
        """A write that kills nobody: False when the range is bad (the caller words the death)."""
        if not self.address_ok(addr, 4):
            return False
        _U32.pack_into(self.mem, addr, value & 0xFFFFFFFF)
        return True

    def data_field(self, name):
        """The gpa of a field of the Guest's lguest_data."""
        return self.lguest_data + _DATA_OFFSET[name]

    def pin_stack_pages(self):
        self.shadow.pin_stack_pages(self.esp1, self.stack_pages)

    # H:200 The run loop, 2.6.23's run_guest(), entered by every read() of the Launcher.  Each time
    # round: deal with the trap the Guest last took, do the hypercalls it left for us, return to the
    # Launcher if one of them was a DMA for it, leave for a signal or a break request, maybe inject an
    # interrupt, and then run the Guest until it next traps.
    # :*
    def run(self):
        """Run until there is something for the Launcher: 8 bytes of DMA, or an errno."""
        try:
            return self.run_loop()
        except BaseException as e:
            # H:205 Python runs a signal handler in the main thread between any two bytecodes, so the
            # Launcher's handler may raise right in the middle of the Host's work, where the kernel's
            # run loop could never be interrupted.  Where that is harmless the loop is built for it:
            # an exit KVM reported but we did not yet look at stays marked in kvm_run (exit_reason is
            # set to EXIT_NONE only once it is dealt with), and a trap waits in `trap_to_handle`, so
            # the next read() picks both up where the exception left them.  A Guest whose hypercall,
            # trap or interrupt delivery was cut in half is in no state anyone can vouch for: it is
            # killed, saying so.  A handler that only sets a flag, as 2.6.23's Launcher had, never
            # costs the Guest anything: read() returns EINTR, and the Guest resumes.
            # :*
            step = self.step
            if step is not None and self.dead is None and self.vm is not None:
                if isinstance(step, tuple):     # (format, number): formatted only when needed
                    step = step[0] % step[1]
                self.kill_guest("%s interrupted the Host while %s" % (type(e).__name__, step))
            self.step = None
            raise

    def run_loop(self):
        run = self.vm.run
        while True:
            if run.exit_reason != EXIT_NONE:
                self.finish_exit()            # KVM's last exit, if an exception cut in after it
            if self.trap_to_handle:
                trapnum = self.frame.trapnum
                self.step = ("handling trap %d", trapnum)
                self.trap_to_handle = False
                interrupts_and_traps.handle_trap(self, trapnum)
                self.step = None
            if self.dead is not None:
                return -errno.ENOENT
            # While the vCPU is part-way through the Switcher, the frame is the Switcher's to finish:
            # no hypercall, trap or interrupt may be taken from it until the next real exit.
            settled = not self.mid_switcher
            if settled:
                hypercalls.do_hypercalls(self)
                if self.dma_is_pending:
                    return struct.pack("<II", self.pending_dma, self.pending_key)
            if self.break_out:
                return -errno.EAGAIN
            if settled:
                interrupts_and_traps.check_timer(self)
                self.collect_remote()
                interrupts_and_traps.maybe_do_interrupt(self)
            if self.dead is not None:
                return -errno.ENOENT
            if self.halted:
                r = interrupts_and_traps.halt_wait(self)
                if r:
                    return r
                continue
            r = self.run_guest_once()
            if r:
                return r

    # H:210 Entering the Guest.  The frame's trap number is set to 256 first, as 2.6.23 did, so a fault
    # inside the Switcher itself can be told from a Guest trap.  If the Host changed a shadow entry the
    # CPU may have cached, or switched roots, it asks the Switcher to reload cr3 on the way in.  Then
    # KVM_RUN: on an `out` to our port the Guest trapped and the frame holds its registers; on kvm-pvm
    # an instruction KVM's emulator refuses comes back as an internal error, and the assist module
    # turns it into the trap real hardware would have taken.
    # :*
    def run_guest_once(self):
        f = self.frame
        window = self.mid_switcher and not self.window_tried
        if self.mid_switcher:
            # H:212 The Switcher is still at work on the frame: write nothing to it.  But while it
            # was, the loop could take no interrupt, timer or other Guest's IRQ; a Guest that then
            # runs without ever exiting (a spin loop, under hardware paging) would never be looked
            # at again.  So we ask KVM for an exit as soon as the vCPU could take an interrupt:
            # that is once the Switcher has returned to the Guest, whose eflags always have IF set.
            # (Not twice in a row: a KVM that stops there still inside the Switcher is not asked
            # again on the next entry, which lets the Switcher finish.)
            # :*
            self.window_tried = window
        elif self.in_switcher:
            f.trapnum = TRAP_IN_SWITCHER
            if self.shadow.changed:
                f.cr3_req = self.loaded_cr3 = self.shadow.current.pml4
                self.shadow.changed = False
            if self.ts != self.loaded_ts:
                f.cr0_req = self.guest_cr0()
                self.loaded_ts = self.ts
        else:
            self.resume_guest(self)
        st = self.stats
        if st is not None:
            entered = st.entering()
        # Written before every entry, not just set and cleared: an exception from a signal
        # handler may cut in anywhere after KVM_RUN, and a request left standing would make every
        # later entry stop at once, the Guest never getting on.
        _U8.pack_into(self.vm.run_map, _REQUEST_INTERRUPT_WINDOW, window)
        r = kvm_run_raw(self.vm.vcpu)
        if st is not None:
            st.exited(entered, None)
        if r < 0:
            if r not in (-errno.EINTR, -errno.EAGAIN):
                raise OSError(-r, "KVM_RUN: " + os.strerror(-r))
            self.vm.run.exit_reason = KVM_EXIT_INTR      # what KVM writes for EINTR; EAGAIN too here
        return self.finish_exit()

    def finish_exit(self):
        """Take in the exit KVM_RUN reported: 0 to go on, -EINTR for the Launcher's signal."""
        run_map = self.vm.run_map
        reason, port = _EXIT.unpack_from(run_map)
        if not self.mid_switcher:
            self.window_tried = False
        self.mid_switcher = False             # KVM ran, so the Switcher has moved on
        r = 0
        if reason == KVM_EXIT_INTR:
            # A kick (the timer, a break, another Guest's DMA) just means "look again"; any other
            # signal is the Launcher's, and read() returns EINTR for it.
            self.stopped_anywhere()
            r = 0 if self.kicker.drain() else -errno.EINTR
        elif reason == KVM_EXIT_IRQ_WINDOW_OPEN:
            self.stopped_anywhere()           # H:212: out of the Switcher, back in the Guest
        elif reason == KVM_EXIT_IO and port == SWITCHER_PORT:
            self.in_switcher = True
            trapnum = self.frame.trapnum
            self.exits[trapnum] = self.exits.get(trapnum, 0) + 1
            if self.frame.cs & 3 == 0:
                self.kill_guest("unhandled trap %d at %#x (%#x)"
                                % (TRAP_IN_SWITCHER, self.frame.eip, self.frame.errcode))
            self.trap_to_handle = self.dead is None
        elif reason == KVM_EXIT_IO and port == SWITCHER_NMI_PORT:
            # The NMI stub reports in from wherever the NMI struck; the next KVM_RUN returns there.
            self.exits[2] = self.exits.get(2, 0) + 1
            self.mid_switcher = True
        elif reason == KVM_EXIT_INTERNAL_ERROR and assist.capture(self):
            self.trap_to_handle = not self.mid_switcher and self.dead is None
        else:
            self.kill_guest(self.describe_exit(reason))
        if self.stats is not None:
            self.stats.kind = stats.exit_kind(reason, port, self.frame.trapnum)
        _U32.pack_into(run_map, _EXIT_REASON, EXIT_NONE)
        return r

    # H:215 A signal stops the vCPU wherever it happens to be, not at a trap.  If that was in the
    # Guest, its registers are saved into the frame as a trap would have saved them, marked as "no
    # trap", so an interrupt can be injected and the Guest resumed from exactly there.  If it was in
    # the Switcher, half-way through saving or restoring the frame, or KVM was in the middle of
    # delivering an exception, we leave everything alone and let the next KVM_RUN finish that work.
    # :*
    def stopped_anywhere(self):
        if self.vm.sync_regs and self.vm.run.kvm_dirty_regs:
            # KVM stopped before it even took the registers we gave it: the frame still holds them.
            # A new cr3 given with them (H:865) may not have been taken either: send it again.
            self.frame.trapnum = TRAP_KICKED
            self.loaded_cr3 = None
            return
        # An exception KVM is still delivering belongs to the state it was raised in: leave it be.
        if self.vm.event_in_flight() or self.save_stopped_vcpu(self, TRAP_KICKED) is None:
            self.mid_switcher = True
            self.in_switcher = True

    def describe_exit(self, reason):
        if reason == KVM_EXIT_MMIO:
            # The Guest touched Guest-physical memory that has none behind it: only the direct
            # backend's Guest can, through its own page tables.  lguest's words for a page it
            # could not get.
            return "failed to get page %u" % (_U64.unpack_from(self.vm.run_map, _MMIO_ADDR)[0] >> 12)
        if reason == KVM_EXIT_SHUTDOWN:
            return "unhandled trap %d at %#x (%#x)" % (TRAP_IN_SWITCHER, self.frame.eip, 0)
        if reason == KVM_EXIT_FAIL_ENTRY:
            return "KVM could not enter the Guest (hardware reason %#x)" % \
                self.vm.run.u.fail_entry.hardware_entry_failure_reason
        if reason == KVM_EXIT_IO:
            return "unexpected I/O exit on port %#x" % self.vm.run.u.io.port
        return "unexpected KVM exit %d" % reason

    # H:190 Letting go (2.6.23's release): the VM, the vCPU, the shadow tables and the Host slot.
    # :*
    def set_clockevent(self, delta_ns):
        """SET_CLOCKEVENT: IRQ 0 in delta_ns nanoseconds; 0 cancels; a new call replaces the old."""
        self.timer_deadline = None if delta_ns == 0 else time.monotonic_ns() + delta_ns
        self.kicker.arm(self.timer_deadline)

    def release(self):
        if self.registered:
            self.registry.unregister(self.guestid, self.nonce)
            self.registered = False
        io.release_bindings(self)
        if self.kicker is not None:
            self.kicker.close()
            self.kicker = None
        if self.vm is not None:
            self.vm.close()
            self.vm = None
        for name in ("frame", "switcher", "shadow"):
            if hasattr(self, name):
                delattr(self, name)
        try:
            self.hmem.close()
        except BufferError:
            pass   # a view still exported; the mapping goes when the last one does
        self.mem.release()


# H:140 tsc_khz tells the Guest it may use the TSC as its clock.  2.6.23 gave it only when the host's
# TSC ran at a constant rate and did not stop in idle states; so do we, taking the rate from KVM.
# :*
_DATA_OFFSET = {name: getattr(abi.lguest_data, name).offset for name, *_ in abi.lguest_data._fields_}


def host_tsc_khz(vm):
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return 0
    if "constant_tsc" in flags and "nonstop_tsc" in flags:
        return vm.tsc_khz()
    return 0


_U8 = struct.Struct("<B")
_EXIT = struct.Struct("<8xI22xH")         # kvm_run.exit_reason, and io.port when it is an I/O exit
_EXIT_REASON = 8
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MMIO_ADDR = 32                           # kvm_run.mmio.phys_addr
_REQUEST_INTERRUPT_WINDOW = kvm_run.request_interrupt_window.offset
EXIT_NONE = 0xFFFFFFFF                    # our mark in kvm_run.exit_reason: no exit left to look at
