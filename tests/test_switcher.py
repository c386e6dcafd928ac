"""The Switcher's hand-written machine code, checked against the system assembler."""
import shutil
import struct
import subprocess

import pytest

from lguest_kvm import switcher


def assemble(src, tmp_path, bits=64):
    s, o, b = tmp_path / "x.S", tmp_path / "x.o", tmp_path / "x.bin"
    s.write_text(f".code{bits}\n" + src + "\n")
    subprocess.run(["as", f"--{bits}", "-o", str(o), str(s)], check=True, capture_output=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(o), str(b)], check=True)
    return b.read_bytes()


needs_as = pytest.mark.skipif(shutil.which("as") is None, reason="binutils' as is not installed")


@needs_as
@pytest.mark.parametrize("bits", [64, 32])
def test_common_code_matches_assembler(tmp_path, bits):
    """The long-mode Switcher's code, and the direct backend's 32-bit version of it."""
    save, resume = switcher.switcher_code(bits)
    lines = []
    for text, _ in save + resume:
        lines.append(text.replace(" 1f", " 1f").replace("mov %eax,%gs", "mov %ax,%gs")
                     .replace("mov %eax,%fs", "mov %ax,%fs").replace("mov %eax,%es", "mov %ax,%es")
                     .replace("mov %eax,%ds", "mov %ax,%ds")
                     .replace("push $0", "pushq $0" if bits == 64 else "pushl $0"))
    src = "\n".join(lines).replace("1: ", "1:\n").replace("2: ", "2:\n")
    assert assemble(src, tmp_path, bits) == switcher.common_code(save, resume)


@pytest.mark.parametrize("vector", [0, 13, 14, 0x1F, 0x80, 255])
def test_stub_shape(vector):
    """push $0 where the CPU gives no error code, push $vector (imm32 form), jmp common."""
    base = switcher.LINEAR_STUBS + vector * 16
    stub = switcher.stub_code(vector)
    off = 0 if vector in switcher.ERRCODE_VECTORS else 2
    if off:
        assert stub[:2] == b"\x6a\x00"
    assert stub[off] == 0x68 and struct.unpack_from("<I", stub, off + 1)[0] == vector
    assert stub[off + 5] == 0xE9
    rel = struct.unpack_from("<i", stub, off + 6)[0]
    assert base + off + 10 + rel == switcher.COMMON_LINEAR
    assert len(stub) == 16


def test_frame_layout_matches_the_stub_pushes():
    # The CPU's part of the frame ends at the top of the register page.
    assert switcher.FRAME_OFFSET + switcher.FRAME_SIZE == (switcher.REGS_PAGE + 1) * 4096
    assert switcher.Frame.ss.offset == switcher.FRAME_SIZE - 8
    assert switcher.Frame.errcode.offset == switcher.FRAME_SIZE - 48
    assert switcher.Frame.trapnum.offset == switcher.FRAME_SIZE - 56
    pushes = sum(1 for t, _ in switcher.COMMON_SAVE if t.startswith("push"))
    assert switcher.Frame.cr3_req.offset == switcher.FRAME_SIZE - 56 - 8 * pushes


def test_idt_gates():
    gate = switcher.idt_gate(0x1F, 1)
    lo, sel, ist, attr, mid, hi, _ = struct.unpack("<HHBBHII", gate)
    assert sel == switcher.SEL_HOST_CS and ist == 1 and attr == 0x8E | (1 << 5)
    assert lo | (mid << 16) | (hi << 32) == switcher.LINEAR_STUBS + 0x1F * 16
