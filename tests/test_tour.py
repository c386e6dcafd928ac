"""The tour extractor (lguest_kvm/tour.py), on small trees and on this repository."""
import subprocess
import sys
import textwrap
from pathlib import Path

from lguest_kvm import tour

ROOT = Path(__file__).resolve().parent.parent


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))


def chunk_file(tag: str, prose: str = "A stop on the tour.") -> str:
    return f"# {tag} {prose}\nx = 1\n# :*\n"


def test_duplicate_number_is_reported(tmp_path):
    write(tmp_path, "lguest_kvm/a.py", chunk_file("H:100"))
    write(tmp_path, "lguest_kvm/b.py", chunk_file("H:100"))
    write(tmp_path, "launcher/c.py", chunk_file("L:100"))  # same number, other part: fine
    problems = tour.check(tmp_path)
    assert len(problems) == 1
    assert "duplicate tag H:100" in problems[0]
    assert "lguest_kvm/a.py:1" in problems[0]


def test_unclosed_chunk_is_reported(tmp_path):
    write(tmp_path, "lguest_kvm/a.py", "# H:100 Opened, never closed.\nx = 1\n")
    problems = tour.check(tmp_path)
    assert problems == ["lguest_kvm/a.py:1: chunk H:100 is never closed"]


def test_unclosed_c_chunk_is_reported(tmp_path):
    write(tmp_path, "launcher/guest/boot.c", "/*G:100 Opened, never closed. */\nint x;\n")
    problems = tour.check(tmp_path)
    assert problems == ["launcher/guest/boot.c:1: chunk G:100 is never closed"]


def test_chunk_inside_chunk_is_reported(tmp_path):
    write(tmp_path, "lguest_kvm/a.py", """
        # H:100 Outer.
        x = 1
            # H:110 Inner, too soon.
        y = 2
        # :*
    """)
    problems = tour.check(tmp_path)
    assert problems == ["lguest_kvm/a.py:3: chunk H:110 opened inside chunk H:100 (opened at line 1)"]


def test_module_without_chunk_is_reported(tmp_path):
    write(tmp_path, "lguest_kvm/told.py", chunk_file("H:100"))
    write(tmp_path, "lguest_kvm/silent.py", "x = 1\n")
    write(tmp_path, "launcher/guest/quiet.py", "# just a comment\ny = 2\n")
    write(tmp_path, "lguest_kvm/__init__.py", "")
    write(tmp_path, "launcher/__init__.py", '"""Only a docstring."""\n')
    write(tmp_path, "launcher/__main__.py", "import sys\n")
    write(tmp_path, "tests/guests/helper.py", "z = 3\n")  # scanned, but needs no chunk
    write(tmp_path, "lguest_kvm/sub/__init__.py", "from os import path\n")
    assert sorted(tour.check(tmp_path)) == [
        "launcher/guest/quiet.py: module has no tour chunk",
        "lguest_kvm/silent.py: module has no tour chunk",
        "lguest_kvm/sub/__init__.py: module has no tour chunk",
    ]


def test_sorted_by_part_then_number(tmp_path):
    write(tmp_path, "lguest_kvm/z.py",
          chunk_file("M:100") + chunk_file("H:200") + chunk_file("H:020") + chunk_file("S:100"))
    write(tmp_path, "launcher/a.py", chunk_file("L:900") + chunk_file("P:500") + chunk_file("D:100"))
    write(tmp_path, "tests/guests/g.py", chunk_file("G:300") + chunk_file("P:100"))
    tags = [c.tag for c in tour.collect(tmp_path)]
    assert tags == ["P:100", "P:500", "G:300", "D:100", "L:900", "H:020", "H:200", "S:100", "M:100"]
    assert tour.check(tmp_path) == []


def test_python_chunk_rendering(tmp_path):
    write(tmp_path, "lguest_kvm/a.py", """
        class Guest:
            # H:100 The Guest's registers live here.
            # They are read straight from memory.
            def regs(self):
                # terse remark, part of the code
                return self._regs
            # :*
    """)
    [chunk] = tour.collect(tmp_path)
    assert (chunk.tag, chunk.path, chunk.line) == ("H:100", "lguest_kvm/a.py", 2)
    assert chunk.render() == [
        "The Guest's registers live here.",
        "They are read straight from memory.",
        "",
        "def regs(self):",
        "    # terse remark, part of the code",
        "    return self._regs",
    ]


def test_c_and_assembly_chunks_are_extracted(tmp_path):
    write(tmp_path, "launcher/guest/boot.c", """
        #include "lguest.h"
        /*G:100 The Guest starts here.
         * It says hello first. */
        void start(void)
        {
        \t/* terse remark */
        \thcall(1, 2);
        }
        /*:*/
        static int untold;
    """)
    write(tmp_path, "launcher/guest/hcall.h", "/*G:050 A one-line stop. :*/\n")
    write(tmp_path, "tests/guests/entry.S", """
        /*S:100 Entry, in assembly.
         *
         * Two paragraphs. */
        \tmovl $1, %eax
        /* The end of the stop. :*/
    """)
    chunks = tour.collect(tmp_path)
    assert [(c.tag, c.path) for c in chunks] == [
        ("G:050", "launcher/guest/hcall.h"),
        ("G:100", "launcher/guest/boot.c"),
        ("S:100", "tests/guests/entry.S"),
    ]
    assert chunks[0].render() == ["A one-line stop."]
    assert chunks[1].render() == [
        "The Guest starts here.",
        "It says hello first.",
        "",
        "void start(void)",
        "{",
        "\t/* terse remark */",
        "\thcall(1, 2);",
        "}",
    ]
    assert chunks[2].render() == [
        "Entry, in assembly.", "", "Two paragraphs.", "", "movl $1, %eax", "", "The end of the stop.",
    ]
    assert tour.check(tmp_path) == []


def test_render_headers_and_part_filter(tmp_path):
    write(tmp_path, "lguest_kvm/a.py", chunk_file("H:100", "First.") + chunk_file("H:200", "Second."))
    write(tmp_path, "lguest_kvm/b.py", chunk_file("H:150", "Between."))
    write(tmp_path, "launcher/c.py", chunk_file("L:100", "Launcher."))
    text = tour.render(tour.collect(tmp_path))
    assert text.count("[ lguest_kvm/a.py ]") == 2   # a.py, b.py, then a.py again
    assert text.count("[ lguest_kvm/b.py ]") == 1
    assert text.index("Launcher.") < text.index("First.") < text.index("Between.") < text.index("Second.")
    only_h = tour.render(tour.collect(tmp_path), "H")
    assert "Launcher." not in only_h and "Between." in only_h


def test_command_line_prints_the_tour():
    out = subprocess.run([sys.executable, "-m", "lguest_kvm.tour", "M"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    assert "[ lguest_kvm/tour.py ]" in out.stdout
    assert "# :*" not in out.stdout


def test_this_repository_tour_is_sound():
    assert tour.check(ROOT) == []
