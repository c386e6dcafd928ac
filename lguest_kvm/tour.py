# M:997 Last, a look behind the scenery. The tour you have been reading isn't
# written anywhere as a single document: it lives in the comments of the
# code it describes, and this small module collects it. Any comment line
# that starts with a part letter, a colon and a three-digit number opens a
# chunk, and everything after it (prose and code) belongs to that chunk
# until a comment line holding only ":*". C and assembly Guests use lguest's
# own style: the comment opens with the tag right after the slash-star, and
# a line with ":*/" closes the chunk.
#
# Chunks are sorted by part (P, G, D, L, H, S, M, the order of the journey)
# and then by number, so a chunk can sit next to the code it explains while
# the story still reads from beginning to end. The numbers are sparse on
# purpose: there is always room to slip a new stop in between two others.
#
# A tour that silently drops a chunk is worse than none, so check() is
# strict: two chunks with the same tag, a chunk that never closes, a chunk
# opened inside another, or a module with no chunk at all are problems, and
# a test runs check() on this very repository.
# :*
"""Extract the literate tour from the source tree (python -m lguest_kvm.tour [PART])."""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

PARTS = "PGDLHSM"
PART_NAMES = {
    "P": "Preparation", "G": "Guest", "D": "Drivers", "L": "Launcher",
    "H": "Host", "S": "Switcher", "M": "Mastery",
}
SOURCE_DIRS = ("lguest_kvm", "launcher", "lguest_bench", "tests/guests")
REQUIRED_DIRS = ("lguest_kvm", "launcher")
C_SUFFIXES = (".c", ".h", ".S")

# M:998 Here are the four patterns the whole tour hangs on. The Python
# opener may be indented (a chunk can start inside a class or a function);
# how deep it sits matters later, when the printer tells prose from code.
_PY_OPEN = re.compile(r"^(\s*)#\s*([PGDLHSM]):(\d{3})(?!\d)\s?(.*)$")
_PY_CLOSE = re.compile(r"^\s*#\s*:\*\s*$")
_C_OPEN = re.compile(r"^(\s*)/\*([PGDLHSM]):(\d{3})(?!\d)\s?(.*)$")
_C_CLOSE = ":*/"
# :*


@dataclass
class Chunk:
    """One stop on the tour: the opener's tag and text, then its body lines."""

    part: str
    number: int
    path: str           # relative to the repository root, with forward slashes
    line: int           # 1-based line of the opener
    text: str           # what follows the tag on the opener line
    indent: int         # column of the opener's comment marker
    body: list[str] = field(default_factory=list)
    closed: bool = False
    closing_text: str = ""  # C only: prose before ":*/" on the closing line

    @property
    def tag(self) -> str:
        return f"{self.part}:{self.number:03d}"

    @property
    def is_c(self) -> bool:
        return self.path.endswith(C_SUFFIXES)

    def sort_key(self) -> tuple:
        return (PARTS.index(self.part), self.number, self.path, self.line)

    def render(self) -> list[str]:
        """The chunk as printed: prose without comment markers, code dedented."""
        out = _render_c(self) if self.is_c else _render_py(self)
        while out and not out[0].strip():
            out.pop(0)
        while out and not out[-1].strip():
            out.pop()
        return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _finish(rows: list[tuple[bool, str]]) -> list[str]:
    """rows are (is_prose, text): strip the code's common indentation, and keep
    a blank line between prose and code so each reads as a paragraph."""
    code = [t for prose, t in rows if not prose and t.strip()]
    cut = min((_indent(t) for t in code), default=0)
    out: list[str] = []
    was_prose = True
    for prose, text in rows:
        text = (text if prose else text[cut:]).rstrip()
        if not text:
            out.append("")
            continue
        if prose != was_prose and out and out[-1]:
            out.append("")
        out.append(text)
        was_prose = prose
    return out


def _render_py(chunk: Chunk) -> list[str]:
    # A comment no deeper than the opener is the guide talking; a deeper one
    # is a terse remark inside the code and stays with the code.
    rows: list[tuple[bool, str]] = [(True, chunk.text.strip())]
    for line in chunk.body:
        stripped = line.strip()
        if stripped.startswith("#") and _indent(line) <= chunk.indent:
            text = stripped[1:]
            rows.append((True, text[1:] if text.startswith(" ") else text))
        elif not stripped:
            rows.append((True, ""))
        else:
            rows.append((False, line))
    return _finish(rows)


def _c_prose(text: str) -> str:
    text = text.strip()
    if text.endswith("*/"):
        text = text[:-2].rstrip()
    if text.startswith("/*"):
        text = text[2:]
    elif text.startswith("*"):
        text = text[1:]
    return text[1:] if text.startswith(" ") else text


def _render_c(chunk: Chunk) -> list[str]:
    rows: list[tuple[bool, str]] = []
    opener = chunk.text
    in_comment, prose = "*/" not in opener, True
    rows.append((True, _c_prose(opener.split("*/")[0])))
    for line in chunk.body:
        stripped = line.strip()
        if in_comment:
            rows.append((prose, _c_prose(line) if prose else line))
            in_comment = "*/" not in line
        elif not stripped:
            rows.append((True, ""))
        elif stripped.startswith("/*") and _indent(line) <= chunk.indent:
            rows.append((True, _c_prose(line)))
            in_comment, prose = "*/" not in line, True
        else:
            rows.append((False, line))
            if "/*" in line and "*/" not in line.split("/*", 1)[1]:
                in_comment, prose = True, False
    if chunk.closing_text:
        rows.append((True, _c_prose(chunk.closing_text)))
    return _finish(rows)


# M:999 Reading one file is a tiny state machine: outside a chunk we look
# for an opener, inside one we collect lines until the closer. Problems are
# noted as we go rather than raised, so one slip doesn't hide the rest of
# the tour.
def _scan(path: Path, rel: str, problems: list[str]) -> list[Chunk]:
    is_c = rel.endswith(C_SUFFIXES)
    opener = _C_OPEN if is_c else _PY_OPEN
    text = path.read_text(encoding="utf-8", errors="replace")
    chunks: list[Chunk] = []
    cur: Chunk | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = opener.match(line)
        if m:
            if cur is not None:
                problems.append(f"{rel}:{lineno}: chunk {m[2]}:{m[3]} opened inside "
                                f"chunk {cur.tag} (opened at line {cur.line})")
            cur = Chunk(m[2], int(m[3]), rel, lineno, m[4], len(m[1]))
            chunks.append(cur)
            if is_c and _C_CLOSE in m[4]:
                cur.text = m[4].split(_C_CLOSE)[0]
                cur.closed, cur = True, None
            continue
        if cur is None:
            continue
        if is_c and _C_CLOSE in line:
            cur.closing_text = line.split(_C_CLOSE)[0]
            cur.closed, cur = True, None
        elif not is_c and _PY_CLOSE.match(line):
            cur.closed, cur = True, None
        else:
            cur.body.append(line)
    if cur is not None:
        problems.append(f"{rel}:{cur.line}: chunk {cur.tag} is never closed")
    return chunks
# :*


def _source_files(root: Path) -> list[Path]:
    files = []
    for top in SOURCE_DIRS:
        base = root / top
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            parts = p.relative_to(root).parts
            if any(x.startswith(".") or x == "__pycache__" for x in parts):
                continue
            if p.is_file() and p.suffix in (".py",) + C_SUFFIXES:
                files.append(p)
    return files


def _scan_all(root: Path) -> tuple[list[Chunk], list[str]]:
    root = Path(root)
    problems: list[str] = []
    chunks: list[Chunk] = []
    for p in _source_files(root):
        chunks += _scan(p, p.relative_to(root).as_posix(), problems)
    chunks.sort(key=Chunk.sort_key)
    return chunks, problems


def collect(root) -> list[Chunk]:
    """Every chunk under root's source directories, in tour order."""
    return _scan_all(Path(root))[0]


def _is_empty_module(path: Path) -> bool:
    """True for a module with no statements beyond a docstring."""
    try:
        body = ast.parse(path.read_text(encoding="utf-8", errors="replace")).body
    except SyntaxError:
        return False
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return not body


def check(root) -> list[str]:
    """Problems that would make the tour lie or lose a stop; empty when all is well."""
    root = Path(root)
    chunks, problems = _scan_all(root)
    seen: dict[tuple[str, int], Chunk] = {}
    for c in chunks:
        first = seen.setdefault((c.part, c.number), c)
        if first is not c:
            problems.append(f"{c.path}:{c.line}: duplicate tag {c.tag} "
                            f"(first at {first.path}:{first.line})")
    have = {c.path for c in chunks}
    for p in _source_files(root):
        rel = p.relative_to(root).as_posix()
        if p.suffix != ".py" or rel in have or rel.split("/")[0] not in REQUIRED_DIRS:
            continue
        if p.name == "__main__.py" or (p.name == "__init__.py" and _is_empty_module(p)):
            continue
        problems.append(f"{rel}: module has no tour chunk")
    return problems


def render(chunks: list[Chunk], part: str | None = None) -> str:
    """The tour as text: a banner per part, a [ path ] header per change of file."""
    out: list[str] = []
    last_part = last_path = None
    for c in chunks:
        if part and c.part != part:
            continue
        if c.part != last_part:
            banner = f"{c.part}: {PART_NAMES[c.part]}"
            out += ["", banner, "=" * len(banner)]
            last_part, last_path = c.part, None
        if c.path != last_path:
            out += ["", f"[ {c.path} ]"]
            last_path = c.path
        out += [""] + c.render()
    return "\n".join(out).lstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lguest_kvm.tour",
                                 description="Print the literate tour of lguest-kvm.")
    ap.add_argument("part", nargs="?", type=str.upper, choices=list(PARTS),
                    help="print only this part: " + ", ".join(
                        f"{k} ({v})" for k, v in PART_NAMES.items()))
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    chunks, _ = _scan_all(root)
    try:
        sys.stdout.write(render(chunks, args.part))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped listening (| head): not an error, and nothing to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    problems = check(root)
    for p in problems:
        print(f"tour: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
