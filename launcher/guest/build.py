# L:010 Before the Launcher can load a Guest, somebody has to build one.  Our
# Guests are small freestanding 32-bit programs in C and assembly, linked
# against the runtime in rt/ (head.S, rt.c, lguest.h, guest.lds) into an ELF
# file that looks, to the Launcher, just like a 2.6.23 vmlinux: loadable
# segments at physical 1 MB, virtual 0xC0100000, and "GenuineLguest" in
# front of the entry code.  build_guest() compiles on demand with the system
# gcc and ld and keeps the result in a cache, so the Launcher's default Guest
# and every test Guest are built once per change of their sources.
#
# Things the flags below guard against: there is no 32-bit libgcc here, so
# nothing may need it (no 64-bit division, no floating point:
# -mgeneral-regs-only); no stack protector or PIC; no CET endbr32
# instructions for the emulator to stumble on.  The loader that reads the
# result is launcher/loader.py.
# :*
"""Build freestanding 32-bit lguest Guests (runtime + sources) into a cache."""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import Iterable, Sequence, Union

RT_DIR = pathlib.Path(__file__).resolve().parent / "rt"
RUNTIME_FILES = ("guest.lds", "head.S", "lguest.h", "rt.c", "traps.S", "traps.c")

CC = "gcc"
LD = "ld"
CFLAGS = (
    "-m32", "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector",
    "-nostdlib", "-O2", "-mgeneral-regs-only",
    "-fno-asynchronous-unwind-tables", "-fno-builtin", "-fcf-protection=none",
    "-Wall", "-Werror",
)
LDFLAGS = ("-m", "elf_i386", "--build-id=none", "-nostdlib", "-z", "noexecstack")

Source = Union[str, os.PathLike, tuple]


class GuestBuildError(Exception):
    """The compiler or linker refused; .stderr holds what it said."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(f"{message}\n{stderr}" if stderr else message)
        self.stderr = stderr


def cache_dir() -> pathlib.Path:
    env = os.environ.get("LGUEST_KVM_CACHE")
    if env:
        return pathlib.Path(env)
    return pathlib.Path.home() / ".cache" / "lguest-kvm"


@functools.lru_cache(maxsize=None)
def compiler_version() -> str:
    """First line of `gcc --version` (asked once per process)."""
    try:
        out = subprocess.run([CC, "--version"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise GuestBuildError(f"cannot run {CC}: {e}") from None
    return out.splitlines()[0] if out else ""


def _normalise(sources: Iterable[Source]) -> list[tuple[str, bytes, pathlib.Path | None]]:
    """Each source as (file name, contents, directory it came from or None)."""
    out = []
    for src in sources:
        if isinstance(src, tuple):
            fname, text = src
            data = text.encode() if isinstance(text, str) else bytes(text)
            out.append((str(fname), data, None))
        else:
            path = pathlib.Path(src).resolve()
            try:
                out.append((path.name, path.read_bytes(), path.parent))
            except OSError as e:
                raise GuestBuildError(f"cannot read guest source {src}: {e}") from None
    for fname, _, _ in out:
        if os.path.basename(fname) != fname or not fname.endswith((".c", ".S", ".s")):
            raise GuestBuildError(f"bad guest source name {fname!r} (want x.c or x.S)")
    return out


def _build_key(srcs, cflags: Sequence[str]) -> str:
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)

    for f in RUNTIME_FILES:
        put(f.encode())
        put((RT_DIR / f).read_bytes())
    dirs = set()
    for fname, data, d in srcs:
        put(fname.encode())
        put(data)
        if d is not None:
            dirs.add(d)
    # Path sources may #include headers beside them: those count too.
    for d in sorted(dirs):
        for hdr in sorted(d.glob("*.h")):
            put(hdr.name.encode())
            put(hdr.read_bytes())
    for flag in cflags:
        put(flag.encode())
    put(compiler_version().encode())
    return h.hexdigest()


def _run(cmd: list[str], what: str) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise GuestBuildError(f"cannot run {cmd[0]}: {e}") from None
    if r.returncode != 0:
        raise GuestBuildError(f"{what} failed (exit {r.returncode})",
                              (r.stderr + r.stdout).strip())


# L:020 The cache is a directory per build, named by a sha256 of everything
# that could change the result: the runtime's files, each source's name and
# bytes, the extra flags and the compiler's version.  A build happens in a
# private temporary directory inside the cache and the finished ELF is moved
# into place with os.replace(), which is atomic: two test processes building
# the same Guest at once both succeed, and nobody ever sees half a file.
def build_guest(sources: Iterable[Source], *, cflags: Sequence[str] = (),
                name: str = "guest") -> pathlib.Path:
    """Compile the runtime plus `sources` into a Guest ELF; return its path.

    `sources` are paths of .c/.S files or (filename, text) pairs.
    """
    if not name or os.path.basename(name) != name or name.startswith("."):
        raise GuestBuildError(f"bad guest name {name!r}")
    srcs = _normalise(sources)
    cflags = tuple(str(f) for f in cflags)
    final = cache_dir() / _build_key(srcs, cflags) / f"{name}.elf"
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        elf = _compile_and_link(tmp, srcs, cflags)
        os.replace(elf, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
# :*


def _compile_and_link(tmp: pathlib.Path, srcs, cflags: tuple) -> pathlib.Path:
    units = [(f, RT_DIR / f, None) for f in ("head.S", "rt.c", "traps.S", "traps.c")]
    for i, (fname, data, d) in enumerate(srcs):
        if d is None:
            path = tmp / f"src{i}_{fname}"
            path.write_bytes(data)
        else:
            path = d / fname
        units.append((fname, path, d))
    objs = []
    for i, (fname, path, d) in enumerate(units):
        obj = tmp / f"{i:02d}_{pathlib.Path(fname).stem}.o"
        incs = ["-I", str(RT_DIR)] + (["-I", str(d)] if d is not None else [])
        asm = ["-D__ASSEMBLY__"] if fname.endswith((".S", ".s")) else []
        _run([CC, *CFLAGS, *incs, *asm, *cflags, "-c", str(path), "-o", str(obj)],
             f"compiling {fname}")
        objs.append(str(obj))
    elf = tmp / "guest.elf"
    _run([LD, *LDFLAGS, "-T", str(RT_DIR / "guest.lds"), "-o", str(elf), *objs],
         "linking the guest")
    return elf
