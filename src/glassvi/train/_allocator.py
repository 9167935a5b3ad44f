"""Optional allocator settings for training on CPU with glibc.

A training step on CPU allocates and frees many tensors of a few megabytes (cells x features
intermediates). glibc serves allocations above its mmap threshold with fresh memory maps and
returns freed memory at the top of the heap to the system once it exceeds the trim threshold,
so a step can pay page faults for memory it has just given back. Raising both thresholds keeps
that memory in the process between steps (as the jemalloc and tcmalloc allocators do).

These are settings of the whole process, so glassvi leaves them alone unless asked
(``plan_kwargs={"tune_allocator": True}``), and puts them back when training ends: the
thresholds return to the values set through ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` when the process started, or else to glibc's
defaults (128 KiB each), and free memory is returned to the system. glibc offers no way to
read its current thresholds or to switch its dynamic threshold (which it raises after freeing
large mapped blocks) back on once any threshold was set, so after a tuned training the
thresholds are those start-up values, fixed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: allocations below this come from the heap rather than from fresh memory maps
MMAP_THRESHOLD = 256 * 2**20
#: free memory at the top of the heap beyond this is returned to the system
TRIM_THRESHOLD = 1024 * 2**20
#: glibc's thresholds when nothing configures them (its DEFAULT_MMAP_THRESHOLD_MIN and
#: DEFAULT_TRIM_THRESHOLD)
GLIBC_DEFAULTS = {"mmap_threshold": 128 * 1024, "trim_threshold": 128 * 1024}
_state = {"tuned": False}


def startup_thresholds(environ=None) -> dict[str, int]:
    """The mmap and trim thresholds of glibc at process start-up, from the environment.

    Parameters
    ----------
    environ
        Environment to read (default ``os.environ``): ``GLIBC_TUNABLES`` entries
        ``glibc.malloc.mmap_threshold`` / ``glibc.malloc.trim_threshold``, then
        ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``; glibc's defaults otherwise.

    Returns
    -------
    ``{"mmap_threshold": bytes, "trim_threshold": bytes}``.

    Examples
    --------
    >>> startup_thresholds({"MALLOC_TRIM_THRESHOLD_": "1048576"})["trim_threshold"]
    1048576
    """
    environ = os.environ if environ is None else environ
    values = dict(GLIBC_DEFAULTS)
    for name in values:
        legacy = environ.get(f"MALLOC_{name.upper()}_")
        if legacy and legacy.strip().isdigit():
            values[name] = int(legacy)
    for item in environ.get("GLIBC_TUNABLES", "").replace(":", " ").split():
        key, _, value = item.partition("=")
        name = key.removeprefix("glibc.malloc.")
        if name in values and value.strip().isdigit():
            values[name] = int(value)
    return values


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
    """Raise glibc's mmap and trim thresholds for this process until :func:`restore_cpu_allocator`.

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
    >>> restore_cpu_allocator()
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


def restore_cpu_allocator() -> bool:
    """Put glibc's thresholds back to their start-up values and return free memory.

    A no-op (returning ``False``) unless :func:`tune_cpu_allocator` changed them.

    Returns
    -------
    Whether settings were restored.

    Examples
    --------
    >>> restore_cpu_allocator()
    False
    """
    if not _state["tuned"]:
        return False
    libc = _libc()
    _state["tuned"] = False
    if libc is None:
        return False
    values = startup_thresholds()
    libc.mallopt(_M_MMAP_THRESHOLD, values["mmap_threshold"])
    libc.mallopt(_M_TRIM_THRESHOLD, values["trim_threshold"])
    libc.malloc_trim(0)
    logger.debug("glibc mmap/trim thresholds restored to %s", values)
    return True


def release_free_memory() -> None:
    """Return free heap memory to the system (``malloc_trim``); a no-op off Linux/glibc.

    Examples
    --------
    >>> release_free_memory()
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
