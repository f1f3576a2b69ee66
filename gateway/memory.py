"""Process-wide memory behaviour of the gateway: large buffers go back to the OS when freed.

A submission's message and its sealed envelopes are buffers of up to tens of MiB,
made and freed in several worker threads. glibc raises its mmap threshold when the
first such buffer is freed, so later ones come from per-thread heaps that keep
their pages, and resident memory grows with every thread that once held one
(about 1.4x the peak that the settings allow, measured on a 20 MiB x 20 recipient
submission). A fixed threshold, as `MALLOC_MMAP_THRESHOLD_` would set, maps each
large buffer on its own and unmaps it when it is freed. This module does nothing
where the C library is not glibc, and never touches anything but that one option.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
LARGE_BUFFER = 1024 * 1024


def return_large_buffers(threshold: int = LARGE_BUFFER) -> bool:
    """Have allocations of `threshold` bytes or more mapped apart; True if the C library took it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
