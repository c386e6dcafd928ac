"""lguest-kvm: the Linux 2.6.23 lguest Host, on /dev/kvm."""
# P:001 Welcome to lguest-kvm.  Linux 2.6.23's lguest was a hypervisor small enough to read in an
# afternoon; this is its Host side and Launcher, rebuilt in Python on KVM.  The Guest kernel still
# runs at privilege level 1 and talks to the Host through hypercalls and DMA, exactly as in 2.6.23,
# but the Host is a library in the Launcher's process and the hardware underneath is a KVM vCPU.
# The tour starts with the ABI (abi.py), visits the Launcher's door (lguest_user.py), then the Host
# proper: the run loop (core.py), the Switcher that lives inside the VM (switcher.py), page tables,
# hypercalls, interrupts and traps, segments and DMA.
# :*
from .lguest_user import Lguest, open  # noqa: F401,A004
from .kvm import kvm_kind  # noqa: F401
from .memory import guest_memory, map_file_page, release_guest_memory  # noqa: F401
