"""The benchmarks still run (tiny counts): they are not timed here, only kept working."""
import json
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kvm
ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_bench(tmp_path, script, *args):
    out = tmp_path / "out.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "KVM kind" in r.stdout
    return json.loads(out.read_text())


def test_hypercall_benchmark_runs(tmp_path):
    result = run_bench(tmp_path, "hypercall.py", "--n", "50", "--laps", "1")
    assert result["python_death"] == "CRASH: Power down"
    assert result["python_over_c_driver"] > 0


def test_dma_benchmark_runs(tmp_path):
    result = run_bench(tmp_path, "dma.py", "--launcher-dmas", "20", "--trips", "20",
                       "--g2g-dmas", "20", "--messages", "50")
    assert result
