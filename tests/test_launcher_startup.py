"""Start-up time: from starting `lguest 64` (the bundled Guest OS, its build already cached) to
the first line on its console.  A generous bound, there to catch regressions, not to benchmark."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_launcher_run import Run   # noqa: E402

pytestmark = pytest.mark.kvm
BOUND_S = 3.0


def test_lguest_64_first_console_line_is_quick():
    from launcher.guest.bundled import bundled_guest
    bundled_guest()                             # build now, so only a cached start is timed
    r = Run(64)
    try:
        elapsed = r.expect("\n", timeout=30)    # the first complete console line
        first = r.text.split("\n", 1)[0]
        print(f"\nlguest 64: first console line after {elapsed * 1000:.0f} ms: {first!r}")
        assert first.startswith("lguest-kvm Guest OS"), r.text
        assert elapsed < BOUND_S, (f"lguest 64 took {elapsed:.3f} s to its first console line "
                                   f"(bound {BOUND_S} s)")
        r.expect("lguest$ ", timeout=20)
        r.type("poweroff\n")
        assert r.wait(20) == 0, r.stderr()
    finally:
        r.close()
