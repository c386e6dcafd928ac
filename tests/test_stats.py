"""--stats names every kind of exit the run loop takes, so its table never says "KVM exit 7"."""
from lguest_kvm import kvm, stats, switcher


def test_every_exit_the_run_loop_takes_has_a_name():
    assert stats.exit_kind(kvm.KVM_EXIT_IO, switcher.SWITCHER_PORT, 14) == stats.trap_kind(14)
    assert stats.exit_kind(kvm.KVM_EXIT_INTR, 0, 0) == "signal (kick, timer, break)"
    assert stats.exit_kind(kvm.KVM_EXIT_IRQ_WINDOW_OPEN, 0, 0).startswith("interrupt window")
    assert stats.exit_kind(kvm.KVM_EXIT_IO, switcher.SWITCHER_NMI_PORT, 0) == "NMI"
    assert stats.exit_kind(kvm.KVM_EXIT_INTERNAL_ERROR, 0, 13).startswith("kvm-pvm assist: ")
