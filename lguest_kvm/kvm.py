# H:010 The Host's only window onto the hardware is /dev/kvm, and this module is that window.
#
# Everything below is ctypes: the structures are the kernel's own (include/uapi/linux/kvm.h and
# arch/x86/include/uapi/asm/kvm.h) spelled with fixed-width fields, and the ioctl numbers are computed
# from their sizes the way the kernel's _IO/_IOR/_IOW macros do, so a wrong structure gives a wrong
# number — and a test pins every number.  All ioctls go through one checked helper, ioctl(), which
# raises OSError naming the request that failed: the one choke point for Host failures.
# :*
import ctypes
import errno
import mmap
import os

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

KVMIO = 0xAE
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _IO(nr):
    return _ioc(_IOC_NONE, nr, 0)


def _IOR(nr, struct):
    return _ioc(_IOC_READ, nr, ctypes.sizeof(struct))


def _IOW(nr, struct):
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(struct))


def _IOWR(nr, struct):
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(struct))


class Struct(ctypes.Structure):
    def __repr__(self):
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n, *_ in self._fields_)
        return f"{type(self).__name__}({fields})"


class kvm_userspace_memory_region(Struct):
    _fields_ = [("slot", u32), ("flags", u32), ("guest_phys_addr", u64),
                ("memory_size", u64), ("userspace_addr", u64)]


class kvm_regs(Struct):
    _fields_ = [(n, u64) for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                                   "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                                   "rip", "rflags")]


class kvm_segment(Struct):
    _fields_ = [("base", u64), ("limit", u32), ("selector", u16), ("type", u8),
                ("present", u8), ("dpl", u8), ("db", u8), ("s", u8), ("l", u8), ("g", u8),
                ("avl", u8), ("unusable", u8), ("padding", u8)]


class kvm_dtable(Struct):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


class kvm_sregs(Struct):
    _fields_ = ([(n, kvm_segment) for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")]
                + [("gdt", kvm_dtable), ("idt", kvm_dtable)]
                + [(n, u64) for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")]
                + [("interrupt_bitmap", u64 * 4)])


class kvm_cpuid_entry2(Struct):
    _fields_ = [("function", u32), ("index", u32), ("flags", u32), ("eax", u32), ("ebx", u32),
                ("ecx", u32), ("edx", u32), ("padding", u32 * 3)]


class kvm_cpuid2(Struct):
    _fields_ = [("nent", u32), ("padding", u32)]


MAX_CPUID_ENTRIES = 256


class kvm_cpuid2_buf(Struct):
    _fields_ = [("nent", u32), ("padding", u32), ("entries", kvm_cpuid_entry2 * MAX_CPUID_ENTRIES)]


class kvm_interrupt(Struct):
    _fields_ = [("irq", u32)]


class kvm_signal_mask(Struct):
    _fields_ = [("len", u32)]


class kvm_signal_mask_buf(Struct):
    _fields_ = [("len", u32), ("sigset", u8 * 8)]


class kvm_run_io(Struct):
    _fields_ = [("direction", u8), ("size", u8), ("port", u16), ("count", u32), ("data_offset", u64)]


class kvm_run_internal(Struct):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_fail_entry(Struct):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class kvm_run_exit_union(ctypes.Union):
    _fields_ = [("io", kvm_run_io), ("internal", kvm_run_internal),
                ("fail_entry", kvm_run_fail_entry), ("padding", ctypes.c_char * 256)]


class kvm_sync_regs(Struct):
    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", u8 * 64)]


class kvm_sync_union(ctypes.Union):
    _fields_ = [("regs", kvm_sync_regs), ("padding", ctypes.c_char * 2048)]


class kvm_run(Struct):
    _fields_ = [("request_interrupt_window", u8), ("immediate_exit", u8), ("padding1", u8 * 6),
                ("exit_reason", u32), ("ready_for_interrupt_injection", u8), ("if_flag", u8),
                ("flags", u16), ("cr8", u64), ("apic_base", u64), ("u", kvm_run_exit_union),
                ("kvm_valid_regs", u64), ("kvm_dirty_regs", u64), ("s", kvm_sync_union)]


# H:030 KVM_CAP_SYNC_REGS: where KVM offers it, the vCPU's registers travel in the kvm_run page
# itself on every exit and entry, so the Host reads and changes them with no ioctl at all.  On
# kvm-pvm every vCPU ioctl costs about 5 µs, and the assists need the registers on every refused
# instruction; this halves the cost of a hypercall there.
# :*
KVM_SYNC_X86_REGS, KVM_SYNC_X86_SREGS = 1, 2


# The request numbers, computed from the structures above (pinned in tests/test_kvm.py).
KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(0x05, kvm_cpuid2)
KVM_CREATE_VCPU = _IO(0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(0x46, kvm_userspace_memory_region)
KVM_RUN = _IO(0x80)
KVM_GET_REGS = _IOR(0x81, kvm_regs)
KVM_SET_REGS = _IOW(0x82, kvm_regs)
KVM_GET_SREGS = _IOR(0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(0x84, kvm_sregs)
KVM_INTERRUPT = _IOW(0x86, kvm_interrupt)
KVM_SET_CPUID2 = _IOW(0x90, kvm_cpuid2)
KVM_SET_SIGNAL_MASK = _IOW(0x8B, kvm_signal_mask)
KVM_GET_TSC_KHZ = _IO(0xA3)
KVM_NMI = _IO(0x9A)
KVM_GET_VCPU_EVENTS = _ioc(_IOC_READ, 0x9F, 64)

IOCTL_NAMES = {v: k for k, v in dict(globals()).items() if k.startswith("KVM_") and isinstance(v, int)}

KVM_API_VERSION = 12

KVM_CAP_USER_MEMORY = 3
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SYNC_MMU = 16
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_SYNC_REGS = 74
# What the Host cannot work without, with the reason it needs each.
REQUIRED_CAPS = {
    KVM_CAP_USER_MEMORY: "KVM_CAP_USER_MEMORY (Guest RAM is the Launcher's own memory)",
    KVM_CAP_EXT_CPUID: "KVM_CAP_EXT_CPUID (KVM_SET_CPUID2)",
    KVM_CAP_SYNC_MMU: "KVM_CAP_SYNC_MMU (Launcher writes to Guest RAM must be seen at once)",
    KVM_CAP_IMMEDIATE_EXIT: "KVM_CAP_IMMEDIATE_EXIT (kicking a running vCPU)",
}

KVM_EXIT_UNKNOWN, KVM_EXIT_EXCEPTION, KVM_EXIT_IO, KVM_EXIT_HLT = 0, 1, 2, 5
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTR = 6, 8, 9, 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_INTERNAL_ERROR_EMULATION = 1

_libc = ctypes.CDLL(None, use_errno=True)
_ioctl = _libc.ioctl
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_ioctl.restype = ctypes.c_int


def ioctl(fd, request, arg=None):
    """The one checked ioctl: a failure raises OSError naming the request."""
    ref = ctypes.addressof(arg) if isinstance(arg, ctypes.Structure) else arg
    r = _ioctl(fd, request, ref)     # `arg` stays referenced until the call returns
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{IOCTL_NAMES.get(request, hex(request))}: {os.strerror(e)}")
    return r


def kvm_run_raw(vcpu_fd):
    """KVM_RUN, returning 0 or -errno: EINTR and EAGAIN are results here, not failures."""
    r = _ioctl(vcpu_fd, KVM_RUN, None)
    return -ctypes.get_errno() if r < 0 else 0


# H:020 Two kinds of KVM.  Users' hosts have hardware virtualization (Intel VMX or AMD SVM), where
# every x86 mode runs natively.  Some machines instead have kvm-pvm, a shadow-paging KVM that runs a
# Guest which is not PVM-aware through KVM's instruction emulator: it cannot page in 32-bit mode, and
# its emulator refuses a few instructions our Guests use (`int n`, `iret`, far jumps).  The Host
# works on both, asks which one it has, and says so in every benchmark.
# :*
def kvm_kind():
    """'kvm-pvm', 'vmx', 'svm' or 'unknown' for this host's /dev/kvm."""
    if os.path.exists("/sys/module/kvm_pvm"):
        return "kvm-pvm"
    if os.path.exists("/sys/module/kvm_intel"):
        return "vmx"
    if os.path.exists("/sys/module/kvm_amd"):
        return "svm"
    return "unknown"


class KVM:
    """An open /dev/kvm, checked for the API version and every capability the Host relies on."""

    def __init__(self, path="/dev/kvm"):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"{path} does not exist: this host has no KVM "
                          "(load kvm_intel or kvm_amd, or enable virtualization)") from None
        except PermissionError:
            raise OSError(errno.EACCES, f"no permission to open {path} "
                          "(add yourself to group kvm, or run as root)") from None
        try:
            version = ioctl(self.fd, KVM_GET_API_VERSION)
            if version != KVM_API_VERSION:
                raise OSError(errno.ENOSYS, f"KVM API version {version}, need {KVM_API_VERSION}")
            for cap, what in REQUIRED_CAPS.items():
                if ioctl(self.fd, KVM_CHECK_EXTENSION, cap) <= 0:
                    raise OSError(errno.ENOSYS, f"this KVM lacks {what}")
            self.vcpu_mmap_size = ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE)
            self.sync_regs = ioctl(self.fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS)
        except BaseException:
            os.close(self.fd)
            raise
        self.kind = kvm_kind()

    def supported_cpuid(self):
        buf = kvm_cpuid2_buf(nent=MAX_CPUID_ENTRIES)
        ioctl(self.fd, KVM_GET_SUPPORTED_CPUID, buf)
        return buf

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class VM:
    """One VM with one vCPU: memory slots, the vCPU fd and its shared kvm_run page."""

    def __init__(self, kvm):
        self.kvm = kvm
        self.fd = ioctl(kvm.fd, KVM_CREATE_VM, 0)
        self.vcpu = -1
        self.run_map = None
        try:
            self.vcpu = ioctl(self.fd, KVM_CREATE_VCPU, 0)
            self.run_map = mmap.mmap(self.vcpu, kvm.vcpu_mmap_size, mmap.MAP_SHARED,
                                     mmap.PROT_READ | mmap.PROT_WRITE)
            self.run = kvm_run.from_buffer(self.run_map)
            self.sync_regs = kvm.sync_regs & (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS) == 3
            if self.sync_regs:
                self.run.kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS
            ioctl(self.vcpu, KVM_SET_CPUID2, kvm.supported_cpuid())
        except BaseException:
            self.close()
            raise

    def set_memory(self, slot, gpa, buf, size):
        """Map `size` bytes of the writable buffer `buf` at Guest-physical `gpa`."""
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        if addr % mmap.PAGESIZE or size % mmap.PAGESIZE:
            raise OSError(errno.EINVAL, "Guest memory must be page-aligned")
        ioctl(self.fd, KVM_SET_USER_MEMORY_REGION,
              kvm_userspace_memory_region(slot, 0, gpa, size, addr))

    def get_regs(self, regs=None):
        regs = regs or kvm_regs()
        ioctl(self.vcpu, KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs):
        ioctl(self.vcpu, KVM_SET_REGS, regs)

    def get_sregs(self, sregs=None):
        sregs = sregs or kvm_sregs()
        ioctl(self.vcpu, KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs):
        ioctl(self.vcpu, KVM_SET_SREGS, sregs)

    def set_signal_mask(self, sigset):
        """The signal mask the vCPU thread has while KVM_RUN runs the Guest (8-byte sigset)."""
        ioctl(self.vcpu, KVM_SET_SIGNAL_MASK, kvm_signal_mask_buf(8, (u8 * 8)(*sigset)))

    def tsc_khz(self):
        """The vCPU's TSC frequency in kHz, or 0 where KVM cannot say."""
        try:
            return ioctl(self.vcpu, KVM_GET_TSC_KHZ)
        except OSError:
            return 0

    def event_in_flight(self):
        """Is KVM part-way through delivering an exception, interrupt or NMI to this vCPU?"""
        ev = ctypes.create_string_buffer(64)
        ioctl(self.vcpu, KVM_GET_VCPU_EVENTS, ctypes.addressof(ev))
        raw = ev.raw
        return bool(raw[0] or raw[3] or raw[8] or raw[12])   # exception injected/pending, irq, nmi

    def nmi(self):
        ioctl(self.vcpu, KVM_NMI)

    def interrupt(self, vector):
        ioctl(self.vcpu, KVM_INTERRUPT, kvm_interrupt(vector))

    def close(self):
        if self.run_map is not None:
            self.run = None
            try:
                self.run_map.close()
            except BufferError:
                pass  # a stray export of kvm_run; the mapping goes with the process
            self.run_map = None
        for name in ("vcpu", "fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
