# G:205 Where the bundled Guest OS comes from: the C files in
# launcher/guest/os/, compiled with the Guest runtime by build_guest() into
# the same kind of ELF file as every test Guest, and cached by the hash of its
# sources, so "lguest 64" builds it once and then just loads it.
# :*
"""The bundled default Guest OS (launcher/guest/os/), built on demand."""

from __future__ import annotations

import pathlib

from .build import build_guest

OS_DIR = pathlib.Path(__file__).resolve().parent / "os"


def bundled_sources() -> list[pathlib.Path]:
    """The OS's C and assembly sources, in a stable order."""
    return sorted(p for p in OS_DIR.iterdir() if p.suffix in (".c", ".S"))


def bundled_guest() -> pathlib.Path:
    """Build (or find in the cache) the bundled Guest OS; return its ELF path."""
    return build_guest(bundled_sources(), name="lguest-os")
