"""python -m hw prepare | run [--timeout S] [PYTEST ARGS] | bench SCRIPT [ARGS] | shell

  prepare   build the test machine into LGUEST_HW_CACHE (default ~/.cache/lguest-kvm/hw), once
  run       prepare, boot, run pytest inside against hardware-semantics /dev/kvm, power off; the exit
            status is pytest's.  With no pytest arguments it runs DEFAULT_TESTS.
  bench     boot and run a Python script (a benchmark: bench/paging.py) instead of pytest
  shell     boot with a shell on the console after the (default) job, to look around
"""
import argparse
import pathlib
import sys

from . import machine, prepare

# The Host core, interrupts and traps, page tables, segments and DMA: everything whose behaviour
# depends on how the CPU runs the Guest.  Files not in the checkout (yet) are left out.
DEFAULT_TESTS = ("test_hw_semantics.py", "test_kvm.py", "test_lguest_user.py", "test_hypercalls.py",
                 "test_interrupts.py", "test_usermode.py", "test_page_tables.py", "test_assist.py",
                 "test_segments.py", "test_dma.py", "test_dma_streams.py", "test_direct.py",
                 "test_hostile.py", "test_fuzz_requests.py")
DEFAULT_FLAGS = ("-v", "-rfEs", "--durations=15")


def default_args():
    tests = machine.ROOT / "tests"
    return [*DEFAULT_FLAGS, *(f"tests/{t}" for t in DEFAULT_TESTS if (tests / t).is_file())]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hw", description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("prepare", "run", "bench", "shell"))
    ap.add_argument("--timeout", type=float, default=1500,
                    help="seconds the machine may run before it is killed (default %(default)s)")
    ap.add_argument("--test-timeout", type=int, default=240,
                    help="seconds one test may take inside (default %(default)s)")
    ap.add_argument("--memory", type=int, default=1024, help="MiB (default %(default)s)")
    ap.add_argument("--cpus", type=int, default=1, help="vCPUs (default %(default)s)")
    ap.add_argument("--paging", default="shadow,direct",
                    help="run the tests once per paging backend in this list (default %(default)s)")
    args, pytest_args = ap.parse_known_args(argv)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    if args.command == "prepare":
        prepare.prepare()
        return 0
    if args.command == "bench":
        if not pytest_args:
            ap.error("bench needs a script, e.g. python -m hw bench bench/paging.py")
        return machine.run([], timeout=args.timeout, test_timeout=args.test_timeout,
                           memory_mb=args.memory, cpus=args.cpus, script=pytest_args)
    return machine.run(pytest_args or default_args(), timeout=args.timeout,
                       test_timeout=args.test_timeout, memory_mb=args.memory,
                       cpus=args.cpus, shell=args.command == "shell",
                       pagings=tuple(p for p in args.paging.split(",") if p))


if __name__ == "__main__":
    sys.exit(main())
