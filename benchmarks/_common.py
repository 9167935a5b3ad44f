"""Helpers shared by the benchmark scripts: data, epoch timing, peak memory, the machine."""

from __future__ import annotations

import os
import platform
import resource
import threading
import time

import numpy as np
import psutil

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover
    pl = None


class EpochTimer(pl.Callback):
    """Wall-clock and process CPU seconds of every training epoch."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def on_train_epoch_end(self, trainer, pl_module):
        self.wall.append(time.perf_counter() - self._wall)
        self.cpu.append(time.process_time() - self._cpu)

    def summary(self) -> dict:
        """Per-epoch figures without the first (warm-up) epoch when there are several."""
        wall = self.wall[1:] if len(self.wall) > 1 else self.wall
        cpu = self.cpu[1:] if len(self.cpu) > 1 else self.cpu
        return {
            "epoch_wall_s": [round(t, 4) for t in self.wall],
            "epoch_cpu_s": [round(t, 4) for t in self.cpu],
            "median_epoch_wall_s": float(np.median(wall)),
            "min_epoch_wall_s": float(np.min(wall)),
            "median_epoch_cpu_s": float(np.median(cpu)),
        }


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.start = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def max_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 3)


def most_variable_genes(adata, n_genes: int):
    """A copy of ``adata`` with its ``n_genes`` most variable genes and raw counts in ``X``.

    Chosen as a user would before training: scanpy's ``highly_variable_genes`` (seurat flavour)
    on log-normalised ``layers["counts"]``.
    """
    import scanpy as sc

    logged = adata.copy()
    logged.X = logged.layers["counts"].copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    sc.pp.highly_variable_genes(logged, n_top_genes=n_genes, flavor="seurat")
    out = adata[:, logged.var["highly_variable"].to_numpy()].copy()
    out.X = out.layers["counts"].copy()
    return out
