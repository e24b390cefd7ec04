"""glibc's allocator tuned for training on CPUs, applied by the CLI at start-up.

By default glibc serves every allocation above a threshold (128 KiB, raised dynamically up to 32 MiB)
with its own ``mmap`` and returns it to the kernel with ``munmap`` when freed, and it gives the free top
of the heap back to the kernel (trimming) once that exceeds 128 KiB. A training step allocates and frees
the same large activation and gradient tensors every step, so every step maps fresh pages and pays a
page fault and a zeroing for each 4 KiB of them, then hands them back. With mmap off
(``M_MMAP_MAX`` = 0) and trimming effectively off (``M_TRIM_THRESHOLD`` at its largest), freed tensors
stay in the heap and the next step reuses them: the same as running with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000``, which made the stages markedly faster on a
2-core machine, here without asking a newcomer to set anything. The cost: memory freed at
the end of a phase stays with the process (its peak resident size is unchanged).

Nothing happens when the user chose for themselves (either ``MALLOC_MMAP_MAX_`` or
``MALLOC_TRIM_THRESHOLD_`` is set; glibc read those at process start), when ``TETHER_MALLOC=default``
opts out, or on a platform other than glibc Linux (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping

# glibc's <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int: 2 GiB, the largest it accepts, is "never" for trimming in practice.
TRIM_THRESHOLD = 2**31 - 1

OPT_OUT = "TETHER_MALLOC"
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def configure_allocator(environ: Mapping[str, str] | None = None) -> bool:
    """Turn glibc's mmap allocations and heap trimming off in this process (see the module docstring).

    Returns True when both settings were applied; False (changing nothing) on other platforms, when
    ``TETHER_MALLOC=default``, or when the user set ``MALLOC_MMAP_MAX_``/``MALLOC_TRIM_THRESHOLD_``.
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "").strip().lower() == "default":
        return False
    if any(name in environ for name in USER_SETTINGS):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    # mallopt returns 1 on success, 0 on error.
    return bool(mallopt(M_MMAP_MAX, 0)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt`` from the running process, or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    # Only glibc has gnu_get_libc_version; musl's mallopt exists but does nothing.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
