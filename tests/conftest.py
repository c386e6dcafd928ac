"""Test policy shared by every test: the repository on sys.path, and the `kvm` marker."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KVM_DEVICE = "/dev/kvm"
SKIP_REASON = "no /dev/kvm (set LGUEST_REQUIRE_KVM=1 to make this a failure)"
_kvm_error: list = []  # filled once: [None] when /dev/kvm opens, [message] when not


def _kvm_unavailable():
    """None if /dev/kvm opens read-write, else why not."""
    if not _kvm_error:
        try:
            os.close(os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC))
            _kvm_error.append(None)
        except OSError as e:
            _kvm_error.append(f"cannot open {KVM_DEVICE} read-write: {e.strerror}")
    return _kvm_error[0]


def pytest_runtest_setup(item):
    if item.get_closest_marker("kvm") is None:
        return
    why = _kvm_unavailable()
    if why is None:
        return
    if os.environ.get("LGUEST_REQUIRE_KVM") == "1":
        pytest.fail(f"{why}, and LGUEST_REQUIRE_KVM=1 requires it", pytrace=False)
    pytest.skip(SKIP_REASON)


HARDWARE_KINDS = ("vmx", "svm")


@pytest.fixture(scope="module")
def hardware_kvm():
    """The KVM kind, when it has hardware semantics; otherwise skip, or fail where
    LGUEST_REQUIRE_HW=1 (inside the nested test machine, hw/)."""
    import lguest_kvm
    kind = lguest_kvm.kvm_kind()
    if kind in HARDWARE_KINDS:
        return kind
    why = f"needs hardware KVM semantics (vmx or svm); this host's /dev/kvm is {kind}"
    if os.environ.get("LGUEST_REQUIRE_HW") == "1":
        pytest.fail(f"{why}, and LGUEST_REQUIRE_HW=1 requires them", pytrace=False)
    pytest.skip(why)


@pytest.fixture
def run():
    """Start the real `lguest` command on a pty (test_launcher_run.Run); all are closed afterwards."""
    from test_launcher_run import Run
    runs = []

    def start(*args, **kw):
        r = Run(*args, **kw)
        runs.append(r)
        return r
    yield start
    for r in runs:
        r.close()
