"""Seeding the global random generators that attribution libraries draw from, locally."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator

import numpy as np
import torch


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed NumPy's and torch's global generators for the block, then restore their states.

    captum's GradientSHAP draws its baselines and interpolation points from NumPy's global
    generator and its noise from torch's, and shap reseeds NumPy's; neither takes a generator.
    Seeding them here makes an attribution depend on its ``seed`` only, and restoring them
    keeps the caller's random streams untouched.

    Parameters
    ----------
    seed
        Seed of both generators inside the block.

    Examples
    --------
    >>> with seeded_global_rngs(0):
    ...     a = np.random.rand()  # noqa: NPY002
    >>> with seeded_global_rngs(0):
    ...     b = np.random.rand()  # noqa: NPY002
    >>> a == b
    True
    """
    numpy_state = np.random.get_state()  # noqa: NPY002 - the global stream captum uses
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002
        try:
            yield
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002


def with_seeded_global_rngs(func: Callable) -> Callable:
    """Run ``func`` inside :func:`seeded_global_rngs` with its ``seed`` argument."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with seeded_global_rngs(int(bound.arguments["seed"])):
            return func(*args, **kwargs)

    return wrapper
