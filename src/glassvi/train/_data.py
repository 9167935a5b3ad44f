"""Fast minibatch loading for glassvi models: in memory, sparse, out of core and distributed.

The registered data are held once, as they are: a sparse count matrix stays a SciPy CSR matrix and
only each minibatch is densified; a backed (on-disk) matrix is read minibatch by minibatch in
contiguous row ranges; per-cell covariates become small tensors. One call of the dataset returns a
whole minibatch, so there is no per-cell collation.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.distributed as dist
from anndata.abc import CSCDataset, CSRDataset
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.dataloaders import DataSplitter
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..module import nonzero_key

logger = logging.getLogger(__name__)

#: registry fields that live on cells; anything else (``varm`` masks, ``uns``) is not loaded
_CELL_ATTRS = ("X", "layers", "obs", "obsm")
_INTEGER_KEYS = (
    REGISTRY_KEYS.BATCH_KEY,
    REGISTRY_KEYS.LABELS_KEY,
    REGISTRY_KEYS.CAT_COVS_KEY,
    REGISTRY_KEYS.INDICES_KEY,
)
#: rows closer than this are read in one range from disk (and the rows between are discarded)
_MAX_GAP = 8
#: sparse minibatches denser than this are passed without the positions of their non-zeros
_POSITIONS_MAX_DENSITY = 0.25


def cell_registry_keys(adata_manager: AnnDataManager) -> list[str]:
    """Registry keys of the per-cell data a module needs in its minibatches.

    Fields stored on features (``varm``, e.g. program masks) or globally (``uns``) are left out:
    they are not indexed by cells and a model reads them once, at construction.

    Parameters
    ----------
    adata_manager
        Manager of a registered AnnData or MuData.

    Returns
    -------
    Registry keys, in registration order.

    Examples
    --------
    >>> cell_registry_keys(model.adata_manager)
    ['X', 'batch', 'labels']
    """
    return [
        key for key, field in adata_manager.data_registry.items() if field.attr_name in _CELL_ATTRS
    ]


def _dtype_of(key: str) -> np.dtype:
    return np.dtype(np.int64) if key in _INTEGER_KEYS else np.dtype(np.float32)


def _runs(sorted_rows: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Cover sorted rows by ``[start, stop)`` ranges, merging rows at most ``max_gap`` apart."""
    breaks = np.flatnonzero(np.diff(sorted_rows) > max_gap)
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks + 1, [len(sorted_rows)]])
    return [(int(sorted_rows[a]), int(sorted_rows[b - 1]) + 1) for a, b in zip(starts, stops)]


class _Source:
    """One registered field, sliced by cells."""

    backed = False

    def take(self, rows: np.ndarray, keep_sparse: bool = False):  # pragma: no cover
        raise NotImplementedError


class _SparseSource(_Source):
    """In-memory CSR matrix; densified one minibatch at a time."""

    def __init__(self, matrix, dtype: np.dtype, as_sparse_tensor: bool):
        if matrix.format != "csr":
            logger.info(
                "converting the %s registered matrix to CSR once for row access", matrix.format
            )
        matrix = sp.csr_matrix(matrix)
        if matrix.dtype != dtype:
            matrix = matrix.astype(dtype)
        self.matrix = matrix
        self.as_sparse_tensor = as_sparse_tensor

    def take(self, rows: np.ndarray, keep_sparse: bool = False):
        return _sparse_minibatch(self.matrix[rows], self.as_sparse_tensor, keep_sparse)


class _DenseSource(_Source):
    """In-memory array; small per-cell fields are converted to a tensor once."""

    def __init__(self, array, dtype: np.dtype):
        array = np.asarray(array)
        if array.ndim == 1:
            array = array[:, None]
        # per-cell covariates are tiny: hold them as a tensor; a dense count matrix keeps its
        # storage (and dtype) so that it is not copied as a whole
        self.tensor = None
        self.array = array
        self.dtype = dtype
        if array.shape[1] <= 64 or array.dtype == dtype:
            self.tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))

    def take(self, rows: np.ndarray, keep_sparse: bool = False) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[torch.from_numpy(rows)]
        return torch.from_numpy(self.array[rows].astype(self.dtype, copy=False))


class _BackedSource(_Source):
    """On-disk dense (HDF5 dataset) or CSR matrix, read in contiguous row ranges."""

    backed = True

    def __init__(self, dataset, dtype: np.dtype, as_sparse_tensor: bool, max_gap: int):
        self.dataset = dataset
        self.dtype = dtype
        self.sparse = isinstance(dataset, CSRDataset)
        self.as_sparse_tensor = as_sparse_tensor and self.sparse
        self.max_gap = max_gap
        self.n_cols = int(dataset.shape[1])
        if self.sparse:
            # the row pointers (one integer per cell) are read once; values and column indices
            # are read straight from the file's arrays, range by range
            group = dataset.group
            self.indptr = np.asarray(group["indptr"][...], dtype=np.int64)
            self.values = group["data"]
            self.columns = group["indices"]

    def _sparse_block(self, rows: np.ndarray) -> sp.csr_matrix:
        parts = []
        for start, stop in _runs(rows, self.max_gap):
            lo, hi = self.indptr[start], self.indptr[stop]
            block = sp.csr_matrix(
                (
                    np.asarray(self.values[lo:hi]),
                    np.asarray(self.columns[lo:hi]),
                    self.indptr[start : stop + 1] - lo,
                ),
                shape=(stop - start, self.n_cols),
            )
            parts.append(block[rows[(rows >= start) & (rows < stop)] - start])
        block = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
        return block.astype(self.dtype, copy=False)

    def take(self, rows: np.ndarray, keep_sparse: bool = False):
        # rows are sorted: HDF5 reads contiguous ranges far faster than scattered rows
        if self.sparse:
            block = self._sparse_block(rows)
            return _sparse_minibatch(block, self.as_sparse_tensor, keep_sparse)
        parts = [
            np.asarray(self.dataset[start:stop])[rows[(rows >= start) & (rows < stop)] - start]
            for start, stop in _runs(rows, self.max_gap)
        ]
        return torch.from_numpy(np.concatenate(parts).astype(self.dtype, copy=False))


def _sparse_minibatch(block: sp.csr_matrix, as_sparse_tensor: bool, keep_sparse: bool = False):
    """A sparse minibatch as a CSR tensor, or dense with the positions of its non-zeros.

    Duplicate entries are summed first, so that every position is listed once. The positions
    are only worth their cost for sparse minibatches: above ``_POSITIONS_MAX_DENSITY`` the dense
    minibatch is returned alone. With ``keep_sparse``, the CSR tensor and the positions of its
    stored entries (in storage order) are returned, whatever the density.
    """
    if not block.has_canonical_format:
        block = block.copy()
        block.sum_duplicates()
    if keep_sparse:
        crow = torch.from_numpy(block.indptr.astype(np.int64))
        col = torch.from_numpy(block.indices.astype(np.int64))
        rows = torch.repeat_interleave(torch.arange(block.shape[0]), crow[1:] - crow[:-1])
        return _to_sparse_tensor(block, crow, col), rows * block.shape[1] + col
    if as_sparse_tensor:
        return _to_sparse_tensor(block)
    dense = torch.from_numpy(block.toarray())
    positions = _nonzero_positions(
        torch.from_numpy(block.indptr.astype(np.int64)),
        torch.from_numpy(block.indices),
        block.shape[1],
    )
    return dense if positions is None else (dense, positions)


def _nonzero_positions(crow: torch.Tensor, col: torch.Tensor, n_cols: int):
    """Flat (row-major) positions of the stored entries of a CSR matrix given by its indices.

    ``None`` when the matrix is denser than ``_POSITIONS_MAX_DENSITY``.
    """
    n_rows = crow.numel() - 1
    if col.numel() > _POSITIONS_MAX_DENSITY * n_rows * n_cols:
        return None
    rows = torch.repeat_interleave(torch.arange(n_rows, device=crow.device), crow[1:] - crow[:-1])
    return rows * n_cols + col.to(torch.int64)


def _to_sparse_tensor(block: sp.csr_matrix, crow=None, col=None) -> torch.Tensor:
    if crow is None:
        crow = torch.from_numpy(block.indptr.astype(np.int64))
        col = torch.from_numpy(block.indices.astype(np.int64))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow, col, torch.from_numpy(block.data), size=block.shape, check_invariants=False
        )


def _make_source(key: str, data, as_sparse_tensor: bool, max_gap: int) -> _Source:
    dtype = _dtype_of(key)
    if isinstance(data, CSCDataset):
        raise ValueError(
            f"The registered field {key!r} is an on-disk CSC matrix, which cannot be read by "
            "cells without loading it whole. Write it as CSR (e.g. adata.X = adata.X.tocsr() "
            "before adata.write_h5ad) to train out of core."
        )
    if isinstance(data, CSRDataset | h5py.Dataset):
        return _BackedSource(data, dtype, as_sparse_tensor, max_gap)
    if sp.issparse(data):
        return _SparseSource(data, dtype, as_sparse_tensor)
    if isinstance(data, pd.DataFrame | pd.Series):
        return _DenseSource(data.to_numpy(), dtype)
    if isinstance(data, np.ndarray):
        return _DenseSource(data, dtype)
    raise TypeError(f"Registered field {key!r} has unsupported type {type(data).__name__}.")


class MinibatchDataset(Dataset):
    """Registered per-cell data of an AnnData/MuData, indexed by whole minibatches.

    Every field is held once in its registered form: sparse counts stay sparse (CSR) and a backed
    matrix stays on disk. ``dataset[rows]`` returns a dict of tensors with ``len(rows)`` rows, in
    which only the minibatch is dense. For each sparse count field ``key`` whose minibatch is at
    most 25% non-zero, the dict also holds, under :func:`glassvi.module.nonzero_key` ``(key)``,
    the flat (row-major) positions of the minibatch's stored entries, which the likelihood uses
    to evaluate count-dependent terms at the non-zero counts only.

    Parameters
    ----------
    adata_manager
        Manager of a registered AnnData or MuData.
    keys
        Registry keys to load (a list, or a dict whose keys are used); defaults to the per-cell
        fields, see :func:`cell_registry_keys`.
    load_sparse_tensor
        Return sparse counts as sparse CSR tensors (densified after the transfer to the device by
        :class:`GlassDataSplitter`).
    max_gap
        For backed data, rows at most this far apart are read in one contiguous range.
    sparse_keys
        Sparse count fields whose minibatches are never densified: ``batch[key]`` is a sparse
        CSR tensor and ``batch[nonzero_key(key)]`` lists the flat positions of its stored
        entries in storage order (so ``batch[key].values()`` are the counts there), at any
        density. For consumers that read these fields at their stored entries only, such as
        a module's training step on binary accessibility (see
        ``GlassVAE.sparse_input_keys``). Fields stored densely are returned dense.
    cell_arrays
        Further per-cell arrays (one row per cell, float32) returned under their keys, such as
        values a model derives from the data once before training
        (``glassvi.module.ANCHOR_TARGET_KEY``).

    Examples
    --------
    >>> ds = MinibatchDataset(model.adata_manager)
    >>> batch = ds[np.array([0, 5, 9])]
    >>> batch["X"].shape
    torch.Size([3, 2000])
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        keys: Sequence[str] | Mapping[str, Any] | None = None,
        load_sparse_tensor: bool = False,
        max_gap: int = _MAX_GAP,
        sparse_keys: Sequence[str] = (),
        cell_arrays: Mapping[str, np.ndarray] | None = None,
    ):
        if adata_manager.adata is None:
            raise ValueError("The AnnDataManager has no registered data; run setup first.")
        registered = list(adata_manager.data_registry)
        keys = cell_registry_keys(adata_manager) if keys is None else list(keys)
        missing = [k for k in keys if k not in registered]
        if missing:
            raise KeyError(f"{missing} not in the data registry (registered: {registered}).")
        self.n_obs = int(adata_manager.adata.n_obs)
        self.sparse_keys = frozenset(sparse_keys)
        self.sources: dict[str, _Source] = {}
        for key in keys:
            data = adata_manager.get_from_registry(key)
            if isinstance(data, str):  # e.g. the minified-data marker
                continue
            if data.shape[0] != self.n_obs:
                raise ValueError(
                    f"Registered field {key!r} has {data.shape[0]} rows, not one per cell "
                    f"({self.n_obs}); it cannot be loaded by minibatches."
                )
            self.sources[key] = _make_source(key, data, load_sparse_tensor, max_gap)
        for key, array in (cell_arrays or {}).items():
            if len(array) != self.n_obs:
                raise ValueError(
                    f"cell array {key!r} has {len(array)} rows, not one per cell ({self.n_obs})."
                )
            self.sources[key] = _DenseSource(array, np.dtype(np.float32))

    @property
    def backed(self) -> bool:
        """Whether some field is read from disk."""
        return any(s.backed for s in self.sources.values())

    @property
    def keys(self) -> list[str]:
        """Registry keys of the minibatches."""
        return list(self.sources)

    def __len__(self) -> int:
        return self.n_obs

    def with_sparse_keys(self, sparse_keys: Sequence[str]) -> MinibatchDataset:
        """The same data (sources shared, nothing copied) with other ``sparse_keys``."""
        view = copy.copy(self)
        view.sparse_keys = frozenset(sparse_keys)
        return view

    def __getitem__(self, rows) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if self.backed:
            rows = np.sort(rows)
        batch, positions = {}, {}
        for key, src in self.sources.items():
            value = src.take(rows, key in self.sparse_keys)
            if isinstance(value, tuple):
                # sparse counts: the dense minibatch and the positions of its non-zero entries
                value, positions[nonzero_key(key)] = value
            batch[key] = value
        # per-cell fields first: Lightning infers a minibatch's size from its first tensor
        batch.update(positions)
        return batch


class MinibatchSampler(DistributedSampler):
    """Yields whole minibatches of cell indices, shuffled per epoch and sharded across processes.

    The order of an epoch depends only on ``seed`` and the epoch number, so every process of a
    distributed run draws the same permutation and takes its own contiguous share of it (padded
    by wrapping around, so that all processes run the same number of steps). Being a
    :class:`~torch.utils.data.DistributedSampler`, it is kept as is by Lightning, which calls
    :meth:`set_epoch` at each epoch.

    Parameters
    ----------
    indices
        Cells to draw from (e.g. the training cells).
    batch_size
        Cells per minibatch (per process).
    shuffle
        Draw a new random order each epoch; otherwise keep ``indices`` in order.
    drop_last
        Drop the last, incomplete minibatch of each process.
    seed
        Seed of the permutations; defaults to ``scvi.settings.seed``.
    num_replicas
        Number of processes.
    rank
        This process's rank.
    block_size
        Shuffle blocks of this many consecutive cells (in row order) rather than single cells.
        Minibatches then gather a few contiguous row ranges, which is what makes reading from
        disk fast; ``1`` draws cells independently.

    Examples
    --------
    >>> sampler = MinibatchSampler(np.arange(1000), batch_size=128, seed=0)
    >>> len(sampler)
    8
    """

    def __init__(
        self,
        indices: np.ndarray,
        batch_size: int = 128,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        block_size: int = 1,
    ):
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}.")
        seed = settings.seed if seed is None else seed
        super().__init__(
            indices,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=int(seed or 0),
            drop_last=False,
        )
        self.indices = indices
        self.batch_size = int(batch_size)
        self.drop_last_batch = bool(drop_last)
        self.block_size = int(block_size)

    def _epoch_order(self) -> np.ndarray:
        n = len(self.indices)
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.block_size == 1:
            return self.indices[rng.permutation(n)]
        ordered = np.sort(self.indices)
        n_blocks = math.ceil(n / self.block_size)
        blocks = rng.permutation(n_blocks)
        positions = (blocks[:, None] * self.block_size + np.arange(self.block_size)).ravel()
        return ordered[positions[positions < n]]

    def _per_replica(self) -> int:
        return math.ceil(len(self.indices) / self.num_replicas) if len(self.indices) else 0

    def _shard(self, order: np.ndarray) -> np.ndarray:
        if self.num_replicas == 1:
            return order
        per = self._per_replica()
        total = per * self.num_replicas
        if total > len(order):
            order = np.resize(order, total)  # wraps around
        return order[self.rank * per : (self.rank + 1) * per]

    def __iter__(self) -> Iterator[np.ndarray]:
        cells = self._shard(self._epoch_order())
        n_full = len(cells) // self.batch_size
        for i in range(n_full):
            yield cells[i * self.batch_size : (i + 1) * self.batch_size]
        if not self.drop_last_batch and len(cells) > n_full * self.batch_size:
            yield cells[n_full * self.batch_size :]

    def __len__(self) -> int:
        per = self._per_replica()
        return per // self.batch_size if self.drop_last_batch else math.ceil(per / self.batch_size)


def _as_batch(batch):
    """Collation is done by the dataset: a minibatch is returned whole."""
    return batch


class GlassDataSplitter(DataSplitter):
    """Train/validation/test split with fast, sparse, out-of-core and distributed minibatches.

    A drop-in replacement for :class:`scvi.dataloaders.DataSplitter` (same arguments, same
    split of the cells, so ``model.train_indices``/``model.validation_indices`` are set as
    usual), whose data loaders hold each registered field once and load whole minibatches:

    - sparse counts stay a SciPy CSR matrix; only each minibatch is densified, so memory grows
      with the number of nonzeros, not cells x features;
    - a backed AnnData (``anndata.read_h5ad(path, backed="r")``) or backed MuData modality is read
      from disk minibatch by minibatch, in contiguous row ranges, without loading the matrix;
      minibatches are then built from shuffled blocks of ``block_size`` consecutive cells;
    - minibatches carry only the per-cell registry fields (counts of every modality, batch,
      labels, covariates, size factors), not feature-level fields such as program masks;
    - the order is reshuffled each epoch from ``scvi.settings.seed``;
    - under Lightning's distributed data parallel (``strategy="ddp"``), every process reads its
      own share of each epoch's minibatches (sharded by rank), so no distributed sampler needs
      to be injected.

    Multi-GPU training needs no code change: ``model.train(accelerator="gpu", devices=4,
    strategy="ddp_find_unused_parameters_true")`` runs one process per GPU, each with
    ``batch_size`` cells per step (the effective minibatch is ``devices * batch_size``). Run it
    from a script (``python train.py``), not a notebook, as Lightning re-launches the script in
    each process; on one machine with several CPU processes use ``accelerator="cpu"``. Use
    ``pin_memory=True`` (via ``datasplitter_kwargs``) for faster host-to-GPU copies, and
    ``load_sparse_tensor=True`` to copy sparse minibatches and densify them on the GPU.

    Parameters
    ----------
    adata_manager
        Manager of the registered AnnData or MuData.
    train_size
        Fraction of cells used for training (default 0.9).
    validation_size
        Fraction of cells used for validation; defaults to the rest.
    shuffle_set_split
        Shuffle the cells (with ``scvi.settings.seed``) before splitting.
    load_sparse_tensor
        Copy sparse minibatches as sparse tensors and densify them on the device.
    pin_memory
        Pin minibatches in page-locked memory for faster copies to a GPU.
    external_indexing
        Explicit ``[train, validation, test]`` index arrays, as in scvi-tools.
    **kwargs
        ``batch_size`` (default ``scvi.settings.batch_size``), ``drop_last``,
        ``distributed_sampler`` (set by ``model.train`` for DDP strategies; sharding also
        follows an initialised process group), ``data_and_attributes`` (registry keys to load),
        ``block_size`` (cells per shuffled block; default 1 in memory, 16 for backed data),
        ``shuffle_training`` (default ``True``), ``cell_arrays`` (further per-cell arrays
        every minibatch carries, see ``MinibatchDataset``), ``sparse_training_keys`` (sparse
        count fields that training minibatches pass as sparse tensors with the positions of
        their entries, never densified, see ``MinibatchDataset(sparse_keys=...)``; glassvi
        models set it to the fields their training step reads at the stored entries only;
        validation and test minibatches stay dense), and further arguments of
        :class:`torch.utils.data.DataLoader` such as ``num_workers``.

    Examples
    --------
    Models built on :class:`~glassvi.model.base.GlassModelBase` use it automatically:

    >>> adata = anndata.read_h5ad("atlas.h5ad", backed="r")  # stays on disk
    >>> glassvi.model.LinearVI.setup_anndata(adata)
    >>> model = glassvi.model.LinearVI(adata)
    >>> model.train(max_epochs=20, batch_size=256)

    It can also be used on its own:

    >>> splitter = GlassDataSplitter(model.adata_manager, batch_size=128)
    >>> splitter.setup()
    >>> batch = next(iter(splitter.train_dataloader()))
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        pin_memory: bool = False,
        external_indexing: list[np.ndarray] | None = None,
        **kwargs,
    ):
        batch_size = kwargs.pop("batch_size", None)
        if batch_size is None:
            batch_size = settings.batch_size
        valid = isinstance(batch_size, int | np.integer) and not isinstance(batch_size, bool)
        if not valid or batch_size < 1:
            raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}.")
        self.batch_size = int(batch_size)
        self.distributed = bool(kwargs.pop("distributed_sampler", False))
        self.data_and_attributes = kwargs.pop("data_and_attributes", None)
        self.block_size = kwargs.pop("block_size", None)
        self.shuffle_training = bool(kwargs.pop("shuffle_training", True))
        self.sparse_training_keys = tuple(kwargs.pop("sparse_training_keys", None) or ())
        self.cell_arrays = dict(kwargs.pop("cell_arrays", None) or {})
        kwargs.pop("iter_ndarray", None)
        kwargs.pop("drop_dataset_tail", None)
        super().__init__(
            adata_manager,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            load_sparse_tensor=load_sparse_tensor,
            pin_memory=pin_memory,
            external_indexing=external_indexing,
            batch_size=self.batch_size,
            **kwargs,
        )
        self.data_loader_kwargs.pop("batch_size", None)
        self._dataset: MinibatchDataset | None = None

    @property
    def dataset(self) -> MinibatchDataset:
        """The minibatch dataset, built once and shared by the train/validation/test loaders."""
        if self._dataset is None:
            self._dataset = MinibatchDataset(
                self.adata_manager,
                keys=self.data_and_attributes,
                load_sparse_tensor=self.load_sparse_tensor,
                cell_arrays=self.cell_arrays,
            )
        return self._dataset

    def _replicas(self) -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        if self.distributed:
            logger.warning(
                "A distributed strategy was requested but no process group is initialised; "
                "loading all minibatches in this process."
            )
        return 1, 0

    def _loader(
        self, indices: np.ndarray, shuffle: bool, drop_last: bool, sparse_keys=()
    ) -> DataLoader | None:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return None
        dataset = self.dataset
        if sparse_keys:
            dataset = dataset.with_sparse_keys(sparse_keys)
        block_size = self.block_size
        if block_size is None:
            block_size = 16 if dataset.backed else 1
        num_replicas, rank = self._replicas()
        sampler = MinibatchSampler(
            indices,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_replicas=num_replicas,
            rank=rank,
            block_size=int(block_size),
        )
        kwargs = dict(self.data_loader_kwargs)
        kwargs.setdefault("num_workers", settings.dl_num_workers)
        if kwargs["num_workers"] > 0 and dataset.backed:
            logger.warning(
                "num_workers=%d with backed data: HDF5 files are not safe to read from forked "
                "worker processes; use num_workers=0 (the default) for backed AnnData.",
                kwargs["num_workers"],
            )
        if kwargs["num_workers"] > 0:
            kwargs.setdefault("persistent_workers", settings.dl_persistent_workers)
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            collate_fn=_as_batch,
            pin_memory=self.pin_memory,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Loader of the training cells, reshuffled each epoch."""
        if len(self.train_idx) == 0:
            n_cells = self.adata_manager.adata.n_obs
            raise ValueError(
                f"No cells left to train on: the data have {n_cells} cells, and the split keeps "
                "none for training (a last minibatch of fewer than 3 cells is moved to "
                "validation). Training needs at least 3 cells."
            )
        return self._loader(
            self.train_idx, self.shuffle_training, self.drop_last, self.sparse_training_keys
        )

    def val_dataloader(self) -> DataLoader | None:
        """Loader of the validation cells, in order; ``None`` without validation cells."""
        return self._loader(self.val_idx, False, False)

    def test_dataloader(self) -> DataLoader | None:
        """Loader of the test cells, in order; ``None`` without test cells."""
        return self._loader(self.test_idx, False, False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Densify sparse minibatches on the device, keeping their non-zero positions.

        Fields passed with their positions already (``sparse_training_keys``) stay sparse.
        """
        if not self.load_sparse_tensor:
            return batch
        out, positions = {}, {}
        for key, value in batch.items():
            if nonzero_key(key) in batch:
                out[key] = value
            elif isinstance(value, torch.Tensor) and value.layout == torch.sparse_csr:
                found = _nonzero_positions(
                    value.crow_indices(), value.col_indices(), value.shape[1]
                )
                if found is not None:
                    positions[nonzero_key(key)] = found
                value = value.to_dense()
            elif isinstance(value, torch.Tensor) and value.layout != torch.strided:
                value = value.to_dense()
            out[key] = value
        out.update(positions)
        return out
