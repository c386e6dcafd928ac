"""lguest-bench: the performance comparison suite of lguest-kvm (lguest_bench/main.py)."""
