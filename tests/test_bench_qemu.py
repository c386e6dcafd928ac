"""lguest-bench's QEMU baselines (lguest_bench/qemu.py): the Guest builds, QEMU's absence and
KVM's refusals come back as one-line reasons, and figures have the right shape (never speeds)."""
import struct
import subprocess
import time

import pytest

from lguest_bench import qemu

KVM_ERROR = """\
qemu-system-i386: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]
KVM internal error. Suberror: 1
extra data[0]: 0x0000000000000001
emulation failure
EAX=00000023 EBX=00008e00 ECX=00000002 EDX=00105000
EIP=001006eb EFL=00000093 [--S-A-C] CPL=0 II=0 A20=1 SMM=0 HLT=0
Code=00 8e d8 8e c0 6a 23 52 68 02 30 00 00 6a 1b 68 30 03 10 00 <cf> b8 2e 00 00 00 e6 e9 31
"""


def one_line(reason):
    return isinstance(reason, str) and reason.strip() and "\n" not in reason


def test_the_guest_builds_as_a_32_bit_multiboot_elf():
    image = qemu.build_qemu_guest()
    data = image.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1          # ELFCLASS32
    assert struct.unpack_from("<H", data, 18)[0] == 3       # EM_386
    magic = struct.pack("<I", 0x1BADB002)
    at = data.find(magic)
    assert 0 <= at < 8192 and at % 4 == 0
    flags, checksum = struct.unpack_from("<II", data, at + 4)
    assert (0x1BADB002 + flags + checksum) & 0xFFFFFFFF == 0
    assert qemu.build_qemu_guest() == image                 # cached


def test_the_interface():
    assert set(qemu.QEMU_BENCHES) == {"qemu-pio", "qemu-syscall", "qemu-pagefault", "qemu-memburn"}
    assert all(one_line(d) for d in qemu.QEMU_BENCHES.values())
    with pytest.raises(KeyError):
        qemu.qemu_bench("qemu-nosuch", True)


def test_without_qemu_nothing_is_attempted(monkeypatch):
    monkeypatch.setattr(qemu.shutil, "which", lambda name: None)

    def no_popen(*a, **kw):
        raise AssertionError("QEMU was started")
    monkeypatch.setattr(qemu.subprocess, "Popen", no_popen)
    assert qemu.find_qemu() is None
    reason = qemu.qemu_unavailable_reason()
    assert reason == "qemu-system-i386 not installed"
    for name in qemu.QEMU_BENCHES:
        with pytest.raises(qemu.QemuError, match="^qemu-system-i386 not installed$"):
            qemu.qemu_bench(name, True)


def test_a_kvm_internal_error_becomes_one_line():
    reason = qemu._kvm_failure(KVM_ERROR)
    assert one_line(reason)
    assert reason == "KVM internal error. Suberror: 1, emulation failure at EIP=001006eb (cf b8 2e 00: iret)"


@pytest.fixture(scope="module")
def installed():
    if qemu.find_qemu() is None:
        pytest.skip(qemu.qemu_unavailable_reason())
    return qemu.find_qemu()


@pytest.mark.kvm
def test_the_reason_is_none_or_one_line(installed):
    reason = qemu.qemu_unavailable_reason()
    assert reason is None or (one_line(reason) and reason.startswith(("QEMU", "cannot"))), reason


@pytest.mark.kvm
@pytest.mark.parametrize("name", list(qemu.QEMU_BENCHES))
def test_each_benchmark_gives_figures_or_a_reason(installed, name):
    try:
        samples = qemu.qemu_bench(name, True)
    except qemu.QemuError as e:
        assert one_line(str(e)), str(e)
        return
    assert len(samples) >= 2 and all(s > 0 for s in samples)


@pytest.mark.kvm
def test_a_guest_that_runs_too_long_is_killed(installed):
    if qemu.qemu_unavailable_reason():
        pytest.skip(qemu.qemu_unavailable_reason())
    before = set(subprocess.run(["pgrep", "-f", "qemu_guest|qemu-guest"], capture_output=True,
                                text=True).stdout.split())
    t0 = time.monotonic()
    with pytest.raises(qemu.QemuError, match=r"^no result after 1 s \(QEMU killed\)$"):
        qemu.run_qemu("mode=1 n=4000000000 laps=1", timeout=1)
    assert time.monotonic() - t0 < 10
    after = set(subprocess.run(["pgrep", "-f", "qemu_guest|qemu-guest"], capture_output=True,
                               text=True).stdout.split())
    assert after <= before
