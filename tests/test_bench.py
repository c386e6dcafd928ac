"""lguest-bench (lguest_bench/): the shape of what it prints and writes, never its figures."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import lguest_kvm
from lguest_bench.main import GUEST_BENCHES, backends

pytestmark = pytest.mark.kvm
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    r = subprocess.run([sys.executable, "-m", "lguest_bench", "--quick", "--json", str(d / "b.json"),
                        "--svg", str(d / "b.svg")], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return r, json.loads((d / "b.json").read_text()), ET.parse(d / "b.svg").getroot()


def test_table_names_the_kind_and_every_benchmark(quick):
    r, _, _ = quick
    kind = lguest_kvm.kvm_kind()
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"lguest-bench on {kind}: ")
    if kind == "kvm-pvm":
        assert "emulates every Guest instruction" in lines[0]
    assert lines[1].split()[:8] == ["benchmark", "paging", "median", "p10", "p90", "runs",
                                    "baseline", "ratio"]
    rows = {tuple(ln.split()[:2]) for ln in lines[2:] if ln and not ln.startswith("QEMU")}
    want = {(n, p) for n in GUEST_BENCHES for p in backends(kind)} | {("boot", "default")}
    assert rows == want
    assert {("syscall", "shadow"), ("cow", "shadow")} <= rows
    assert "system calls" not in r.stdout
    assert "lguest-bench: " in r.stderr and "benchmarks in" in r.stderr     # the progress line


def test_json_has_statistics_and_same_run_ratios(quick):
    _, data, _ = quick
    assert data["kind"] == lguest_kvm.kvm_kind() and data["quick"] is True
    for row in data["results"]:
        assert row["p10"] <= row["median"] <= row["p90"], row
        assert row["runs"] >= 2
        if row["name"] == "boot":
            assert row["baseline"] is None and row["ratio"] is None
        else:
            assert row["baseline"] > 0
            assert row["ratio"] == pytest.approx(row["median"] / row["baseline"])


def test_user_mode_benchmarks_have_native_baselines(quick):
    _, data, _ = quick
    names = {row["name"]: row["baseline_name"] for row in data["results"]}
    assert names["syscall"] == "the host's own system call (C)"
    assert names["cow"] == "a host copy-on-write fault (C)"


@pytest.mark.parametrize("mode, breakage, why", [
    (12, 1, "a system call returned the wrong answer"),
    (13, 2, "the copied page is not a fresh copy of the original"),
])
def test_user_mode_guests_check_their_work(mode, breakage, why):
    """syscall and cow time a user program that checks every op: sound, it powers down after
    LAPS markers; with the kernel's answer or its copy broken (-DBREAK), it says what went wrong."""
    from launcher.guest.build import build_guest
    from lguest_bench.main import HERE, run_guest

    def build(*extra):
        return build_guest([HERE / "guests" / "bench.c"],
                           cflags=(f"-DMODE={mode}", "-DN=8", "-DLAPS=2", *extra))
    assert len(run_guest(build(), "shadow", 16)) == 3
    with pytest.raises(RuntimeError, match=f"CRASH: {why}$"):
        run_guest(build(f"-DBREAK={breakage}"), "shadow", 16)


def test_svg_draws_one_bar_per_ratio(quick):
    _, data, root = quick
    ns = "{http://www.w3.org/2000/svg}"
    bars = root.findall(f"{ns}rect")
    assert len(bars) == sum(1 for r in data["results"] if r["ratio"])
    assert all(float(b.get("width")) >= 1 for b in bars)


def test_unknown_benchmark_is_refused():
    r = subprocess.run([sys.executable, "-m", "lguest_bench", "--only", "nosuch"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown benchmark nosuch" in r.stderr


def test_the_nested_machine_is_named_for_what_it_is(monkeypatch):
    from lguest_bench import main as bench
    monkeypatch.setattr(bench, "software_cpu", lambda: True)
    assert "software-emulated CPU (TCG)" in bench.kind_note("svm")
    assert "emulates every Guest instruction" in bench.kind_note("kvm-pvm")
    monkeypatch.setattr(bench, "software_cpu", lambda: False)
    assert bench.kind_note("vmx") == "hardware KVM (Intel VMX)"
