"""bench/block.py: it runs end to end on a small disk and prints every line it promises (never
judged on its figures)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kvm
ROOT = Path(__file__).resolve().parent.parent


def test_block_benchmark_prints_the_launcher_beside_the_host(tmp_path):
    out = tmp_path / "block.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "block.py"), "--mib", "4", "--runs",
                        "1", "--timed", "2", "--json", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    for line in ["end to end:", "run 1: Launcher, read() returns -> LHREQ_IRQ",
                 "run 2: Launcher, read() returns -> LHREQ_IRQ", "of which its preadv",
                 "of which GETDMA", "host os.preadv, same bytes, same iovecs",
                 "the same, paced like the Guest", "run 3: host os.preadv again",
                 "target <= 1.2x"]:
        assert line in text, line
    assert "64 requests; 1 iovec(s) per preadv" in text      # 4 MiB in 64 KiB, one run of memory
    got = json.loads(out.read_text())
    assert got["requests"] == 64 and got["kvm_kind"] in text.splitlines()[0]
    assert set(got["ratios"]) == {"host preadv", "host preadv paced like the Guest",
                                  "its own preadv"}
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in got["ratios"].values())
