"""lguest-bench's device benchmarks (lguest_bench/devices.py) in quick mode: the shape of what
they return and that wrong data gives no figures, never the figures themselves."""
import math

import pytest

import lguest_kvm
from lguest_bench import devices
from lguest_bench.devices import DEVICE_BENCHES, device_bench, laps_of

pytestmark = pytest.mark.kvm


def test_the_table_of_benchmarks():
    assert set(DEVICE_BENCHES) == {"dma-pingpong", "dma-bandwidth", "block-read", "block-write"}
    for name, (what, base) in DEVICE_BENCHES.items():
        assert what and base in ("exit", "self")
        assert (base == "self") == name.startswith("block-")
        assert laps_of(name, True) >= 2


def pagings():
    kind = lguest_kvm.kvm_kind()
    return ["shadow", "direct"] if kind in ("vmx", "svm") else ["shadow"]


@pytest.mark.parametrize("name", list(DEVICE_BENCHES))
def test_quick_run_has_the_right_shape(name):
    for paging in pagings():
        samples, base, extra = device_bench(name, paging, quick=True)
        assert len(samples) == laps_of(name, True)
        assert all(isinstance(s, float) and s > 0 and math.isfinite(s) for s in samples)
        assert extra["verified"] is True
        assert extra["bytes_per_op"] > 0
        if DEVICE_BENCHES[name][1] == "self":
            assert base > 0 and math.isfinite(base)
            assert extra["requests"] > 0 and extra["mb_per_s"] > 0
            assert isinstance(extra["direct"], bool)
        else:
            assert base is None
            assert extra["ops"] > 0
        if name == "dma-bandwidth":
            assert extra["mb_per_s"] > 0


@pytest.fixture
def tiny(monkeypatch):
    """Three laps of 16 requests: enough to get through, quickly."""
    for name in ("block-read", "block-write"):
        monkeypatch.setitem(devices.PARAMS, name, (16, 16, 3, 3))


def test_a_wrong_disk_gives_no_figures(tiny, monkeypatch):
    real = devices.make_disk

    def make_disk(path, pages):
        real(path, pages)
        with open(path, "r+b") as f:            # page 37 no longer says it is page 37
            f.seek(37 * 4096)
            f.write(b"\0\0\0\0")

    monkeypatch.setattr(devices, "make_disk", make_disk)
    with pytest.raises(RuntimeError, match="says"):
        device_bench("block-read", "shadow", quick=True)


def test_a_wrong_write_gives_no_figures(tiny, monkeypatch):
    real = devices.run_block_launcher

    def run(disk, *a):
        marks = real(disk, *a)
        with open(disk, "r+b") as f:            # as if one write had gone missing
            f.seek(200 * 4096 + 100)
            f.write(b"\xa5")
        return marks

    monkeypatch.setattr(devices, "run_block_launcher", run)
    with pytest.raises(RuntimeError, match="does not hold"):
        device_bench("block-write", "shadow", quick=True)
