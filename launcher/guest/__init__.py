"""The Guest side: the freestanding 32-bit runtime and its on-demand build."""
