"""Allocator settings for training on CPU with glibc.

A training step on CPU allocates and frees many tensors of a few megabytes (cells x features
intermediates). glibc serves allocations above its mmap threshold with fresh memory maps and
returns freed memory at the top of the heap to the system once it exceeds the trim threshold,
so every step pays page faults for memory it has just given back. Raising both thresholds keeps
that memory in the process between steps (as the jemalloc and tcmalloc allocators do); it is
returned with ``malloc_trim`` when training ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: allocations below this come from the heap rather than from fresh memory maps
MMAP_THRESHOLD = 256 * 2**20
#: free memory at the top of the heap beyond this is returned to the system
TRIM_THRESHOLD = 1024 * 2**20
_state = {"tuned": False}


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only (not musl)
    except (OSError, AttributeError):
        return None
    return libc


def tune_cpu_allocator(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once.

    Parameters
    ----------
    mmap_threshold
        Allocations smaller than this many bytes are served from the heap. If glibc refuses the
        value (older versions cap it at 32 MiB), 32 MiB is used.
    trim_threshold
        Free memory at the top of the heap is returned to the system beyond this many bytes.

    Returns
    -------
    Whether the settings are in effect (``False`` off Linux/glibc).

    Examples
    --------
    >>> tune_cpu_allocator()
    True
    """
    if _state["tuned"]:
        return True
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) or bool(
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    )
    ok = ok and bool(libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    _state["tuned"] = ok
    if ok:
        logger.debug("glibc mmap/trim thresholds raised for CPU training")
    return ok


def release_free_memory() -> None:
    """Return free heap memory to the system (``malloc_trim``); a no-op off Linux/glibc.

    Examples
    --------
    >>> release_free_memory()
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
