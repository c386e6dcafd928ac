"""The nested hardware-KVM test machine: QEMU (TCG, AMD SVM), Debian's kernel, kvm_amd (hw/README.md)."""
