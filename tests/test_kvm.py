"""The /dev/kvm bindings: structure layouts and ioctl numbers pinned to the kernel's values."""
import ctypes
import errno
import os

import pytest

from lguest_kvm import kvm


@pytest.mark.parametrize("name,value", [
    ("KVM_GET_API_VERSION", 0xAE00), ("KVM_CREATE_VM", 0xAE01), ("KVM_CHECK_EXTENSION", 0xAE03),
    ("KVM_GET_VCPU_MMAP_SIZE", 0xAE04), ("KVM_GET_SUPPORTED_CPUID", 0xC008AE05),
    ("KVM_CREATE_VCPU", 0xAE41), ("KVM_SET_USER_MEMORY_REGION", 0x4020AE46), ("KVM_RUN", 0xAE80),
    ("KVM_GET_REGS", 0x8090AE81), ("KVM_SET_REGS", 0x4090AE82), ("KVM_GET_SREGS", 0x8138AE83),
    ("KVM_SET_SREGS", 0x4138AE84), ("KVM_INTERRUPT", 0x4004AE86), ("KVM_SET_CPUID2", 0x4008AE90),
    ("KVM_SET_SIGNAL_MASK", 0x4004AE8B), ("KVM_GET_TSC_KHZ", 0xAEA3), ("KVM_NMI", 0xAE9A),
    ("KVM_GET_VCPU_EVENTS", 0x8040AE9F),
])
def test_ioctl_numbers(name, value):
    assert getattr(kvm, name) == value


@pytest.mark.parametrize("struct,size", [
    (kvm.kvm_regs, 144), (kvm.kvm_sregs, 312), (kvm.kvm_segment, 24), (kvm.kvm_dtable, 16),
    (kvm.kvm_userspace_memory_region, 32), (kvm.kvm_cpuid_entry2, 40), (kvm.kvm_cpuid2, 8),
    (kvm.kvm_interrupt, 4),
])
def test_struct_sizes(struct, size):
    assert ctypes.sizeof(struct) == size


def test_kvm_run_layout():
    assert kvm.kvm_run.exit_reason.offset == 8
    assert kvm.kvm_run.immediate_exit.offset == 1
    assert kvm.kvm_run.u.offset == 32
    assert kvm.kvm_sregs.cr0.offset == 224 and kvm.kvm_sregs.efer.offset == 264
    assert kvm.kvm_run_io.data_offset.offset == 8


def test_ioctl_failure_names_the_request():
    with pytest.raises(OSError) as e:
        kvm.ioctl(-1, kvm.KVM_GET_REGS, kvm.kvm_regs())
    assert e.value.errno == errno.EBADF
    assert "KVM_GET_REGS" in str(e.value)


def test_missing_kvm_is_one_clear_error(tmp_path):
    with pytest.raises(OSError) as e:
        kvm.KVM(str(tmp_path / "kvm"))
    assert e.value.errno == errno.ENOENT
    assert "no KVM" in str(e.value)


def test_unopenable_kvm_says_how_to_fix(tmp_path):
    """A /dev/kvm the user may not open: checked as an unprivileged user, even when tests run as root."""
    p = tmp_path / "kvm"
    p.write_bytes(b"")
    p.chmod(0)
    tmp_path.chmod(0o755)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child drops root, then tries
        try:
            if os.geteuid() == 0:
                os.setuid(65534)
            kvm.KVM(str(p))
            os.write(w, b"opened")
        except OSError as e:
            os.write(w, f"{errno.errorcode[e.errno]} {e.strerror}".encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert out.startswith("EACCES") and "group kvm" in out, out


def test_kind_is_reported():
    assert kvm.kvm_kind() in ("vmx", "svm", "kvm-pvm", "unknown")


@pytest.mark.kvm
def test_open_checks_version_and_capabilities():
    k = kvm.KVM()
    try:
        assert k.vcpu_mmap_size >= 4096
        cpuid = k.supported_cpuid()
        assert 0 < cpuid.nent <= kvm.MAX_CPUID_ENTRIES
        assert k.kind == kvm.kvm_kind()
    finally:
        k.close()
