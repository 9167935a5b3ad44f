"""Simulated single-cell RNA, ATAC and multiome counts with planted gene programs."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

if TYPE_CHECKING:
    from mudata import MuData

logger = logging.getLogger(__name__)

_CHROMOSOMES = [f"chr{i}" for i in range(1, 23)] + ["chrX"]
_MODALITIES = ("rna", "atac", "multiome")
# Entries of one dense cells x features block drawn at a time; bounds memory (~16 MiB per float64
# temporary) whatever the number of cells. It is a constant so that the random stream, and hence
# the output for a given seed, does not depend on the machine.
_BLOCK_ENTRIES = 2**21


def simulate(
    n_cells: int = 2000,
    n_genes: int = 1000,
    n_peaks: int = 2000,
    modality: Literal["rna", "atac", "multiome"] = "rna",
    n_programs: int = 20,
    n_active: int | None = None,
    genes_per_program: tuple[int, int] = (15, 40),
    n_cell_types: int = 5,
    n_batches: int = 2,
    library_size: float = 3000.0,
    dispersion: float = 5.0,
    batch_effect: float = 0.3,
    seed: int = 0,
    *,
    program_overlap: float = 0.2,
    activity_noise: float = 0.5,
    library_size_sd: float = 0.3,
    atac_library_size: float | None = None,
    background_peaks: float = 0.2,
    peak_window: int = 50_000,
    peak_width: int = 500,
    n_jobs: int | None = None,
) -> AnnData | MuData:
    r"""Simulate counts with planted, sparse, overlapping gene programs and known ground truth.

    Genes are real human gene symbols with their hg38 coordinates. Each of ``n_programs`` programs
    is a sparse set of member genes (a gene may belong to several programs); ``n_active`` of them
    drive the data and the rest are decoys that appear in the ground-truth mask but drive nothing.
    Each cell type uses a few programs strongly; per-cell activities vary around the cell type's
    level and are exactly zero where a cell does not use a program.

    The generative model for cell :math:`c` and gene :math:`g` is

    .. math::

        \eta_{cg} = b_g + \sum_k a_{ck} w_{gk} + \beta_{s(c) g}, \qquad
        x_{cg} \sim \mathrm{NB}\big(\ell_c \,\mathrm{softmax}_g(\eta_c)_g,\ \theta\big)

    with lognormal baselines :math:`b_g`, weights :math:`w_{gk} > 0` only for member genes,
    activities :math:`a_{ck} = \max(0, \mu_{t(c) k} + \epsilon_{ck})` (zero for inactive
    programs), batch offsets :math:`\beta_{sg} \sim N(0, \sigma^2)` with :math:`\sigma` =
    ``batch_effect``, and lognormal library sizes :math:`\ell_c` with mean ``library_size``.
    ATAC peaks are placed within ``peak_window`` bp of a gene's TSS and inherit that gene's
    programs (with their own weights); a fraction ``background_peaks`` lies anywhere and belongs
    to no program. Peak counts are Poisson insertion counts with the same softmax model and a
    per-cell depth (mostly 0, 1 or 2; binarise them if a model expects accessibility).

    Parameters
    ----------
    n_cells
        Number of cells.
    n_genes
        Number of genes, drawn at random from the bundled hg38 table (chr1-22, chrX). Programs are
        defined over genes, so genes are drawn for ``modality="atac"`` too (to place peaks).
    n_peaks
        Number of ATAC peaks (ignored for ``modality="rna"``).
    modality
        ``"rna"`` (returns :class:`~anndata.AnnData`), ``"atac"`` (:class:`~anndata.AnnData`) or
        ``"multiome"`` (:class:`~mudata.MuData` with modalities ``"rna"`` and ``"atac"`` measured
        in the same cells).
    n_programs
        Number of planted programs in the ground truth.
    n_active
        Number of programs that drive the data, chosen at random; default ``round(0.75 *
        n_programs)``.
    genes_per_program
        Inclusive range of the number of member genes per program.
    n_cell_types
        Number of cell types (with unequal, random proportions).
    n_batches
        Number of batches (cells assigned uniformly at random).
    library_size
        Mean number of RNA UMIs per cell.
    dispersion
        Inverse dispersion :math:`\theta` of the negative binomial (larger is closer to Poisson).
    batch_effect
        Standard deviation of the per-batch, per-feature log-rate offsets.
    seed
        Random seed; the same arguments and seed give identical output. Cells, programs and the
        RNA are drawn from their own streams, so ``"rna"``, ``"atac"`` and ``"multiome"`` with the
        same seed share cells, programs and (where present) RNA counts.
    program_overlap
        Fraction of each program's members drawn from genes already in earlier programs, so that
        programs overlap.
    activity_noise
        Standard deviation of the per-cell activity around the cell type's level.
    library_size_sd
        Standard deviation of the log library size (and of the log ATAC depth).
    atac_library_size
        Mean number of insertions in peaks per cell; default ``0.25 * n_peaks``.
    background_peaks
        Fraction of peaks that are not placed near a gene and belong to no program.
    peak_window
        Peaks linked to a gene lie entirely within ``peak_window`` bp of its TSS.
    peak_width
        Width of every peak in bp; peaks lie on a grid of this width and never overlap.
    n_jobs
        Threads used to draw counts; default ``min(8, os.cpu_count())``. The output does not
        depend on it.

    Returns
    -------
    :class:`~anndata.AnnData` for ``"rna"`` or ``"atac"``; :class:`~mudata.MuData` with
    ``"rna"`` and ``"atac"`` for ``"multiome"``. ``X`` is a float32 CSR matrix of integer counts,
    copied in ``layers["counts"]``. Cells are named ``"cell_0000"``, ... The ground truth:

    ``obs["cell_type"]``
        Categorical, ``"type_0"``, ... (also on ``mdata.obs`` for multiome).
    ``obs["batch"]``
        Categorical, ``"batch_0"``, ... (also on ``mdata.obs`` for multiome).
    ``obs["true_library_size"]``
        The cell's expected total count in this modality (RNA UMIs or ATAC insertions in peaks).
    ``obsm["true_activity"]``
        float32 cells x ``n_programs`` program activities, zero in inactive programs
        (``mdata.obsm`` for multiome).
    ``var``
        RNA: index = gene symbols; ``chrom``, ``start``, ``end`` (int), ``strand``,
        ``feature_types`` (``"Gene Expression"``). ATAC: index = ``"chr1:1000-1500"``;
        ``chrom``, ``start``, ``end`` (int), ``gene`` (the gene the peak was placed near, ``""``
        for background peaks), ``feature_types`` (``"Peaks"``). Features are in genome order.
    ``varm["true_programs"]``
        bool features x ``n_programs``: membership of genes (RNA) or peaks (ATAC) in programs;
        a peak belongs to the programs of its gene. Inactive programs have members too.
    ``varm["true_weights"]``
        float32 features x ``n_programs``: the weights :math:`w_{gk}` (zero for non-members).
    ``varm["true_batch_effect"]``
        float32 features x ``n_batches``: the per-batch log-rate offsets.
    ``uns["simulation"]``
        dict with ``program_names`` (``"program_00"``, ...), ``active_programs`` (bool,
        ``n_programs``), ``cell_type_names``, ``cell_type_profiles`` (float, cell types x
        programs: the mean activity level of each program in each cell type, zero where a type
        does not use a program), ``batch_names`` and every argument above, resolved (e.g.
        ``n_active``, ``atac_library_size``). On ``mdata.uns`` and each modality for multiome.

    Examples
    --------
    >>> import glassvi as gv
    >>> adata = gv.data.simulate(n_cells=500, n_genes=300, n_programs=8, seed=1)
    >>> adata.varm["true_programs"].shape
    (300, 8)
    >>> mdata = gv.data.simulate(n_cells=500, n_genes=300, n_peaks=600, modality="multiome")
    >>> mdata["atac"].var[["chrom", "start", "end", "gene"]].head()  # doctest: +SKIP
    """
    if modality not in _MODALITIES:
        raise ValueError(f"modality must be one of {_MODALITIES}, got {modality!r}.")
    with_rna = modality in ("rna", "multiome")
    with_atac = modality in ("atac", "multiome")
    _check_int("n_cells", n_cells, 1)
    _check_int("n_genes", n_genes, 1)
    if with_atac:
        _check_int("n_peaks", n_peaks, 1)
    _check_int("n_programs", n_programs, 1)
    if n_active is None:
        n_active = int(round(0.75 * n_programs))
    _check_int("n_active", n_active, 0)
    if n_active > n_programs:
        raise ValueError(f"n_active ({n_active}) must not exceed n_programs ({n_programs}).")
    if len(genes_per_program) != 2:
        raise ValueError("genes_per_program must be a pair (min, max).")
    gpp_min, gpp_max = genes_per_program
    _check_int("genes_per_program[0]", gpp_min, 1)
    _check_int("genes_per_program[1]", gpp_max, 1)
    if gpp_min > gpp_max:
        raise ValueError(
            f"genes_per_program must be (min, max) with min <= max, got {genes_per_program}."
        )
    if gpp_max > n_genes:
        raise ValueError(f"genes_per_program max ({gpp_max}) exceeds n_genes ({n_genes}).")
    _check_int("n_cell_types", n_cell_types, 1)
    _check_int("n_batches", n_batches, 1)
    _check_int("seed", seed, 0)
    if n_jobs is None:
        n_jobs = min(8, os.cpu_count() or 1)
    _check_int("n_jobs", n_jobs, 1)
    _check_positive("library_size", library_size)
    _check_positive("dispersion", dispersion)
    _check_nonnegative("batch_effect", batch_effect)
    _check_nonnegative("activity_noise", activity_noise)
    _check_nonnegative("library_size_sd", library_size_sd)
    if not 0 <= program_overlap <= 1:
        raise ValueError(f"program_overlap must be in [0, 1], got {program_overlap}.")
    if atac_library_size is None:
        atac_library_size = 0.25 * n_peaks if with_atac else 0.0
    if with_atac:
        _check_positive("atac_library_size", atac_library_size)
        if not 0 <= background_peaks <= 1:
            raise ValueError(f"background_peaks must be in [0, 1], got {background_peaks}.")
        _check_int("peak_width", peak_width, 1)
        _check_int("peak_window", peak_window, 1)
        if peak_window < peak_width:
            raise ValueError(f"peak_window ({peak_window}) must be >= peak_width ({peak_width}).")

    table = _load_gene_table()
    if n_genes > len(table):
        raise ValueError(f"n_genes ({n_genes}) exceeds the {len(table)} genes available.")

    # Independent streams: the same seed gives the same cells, programs and RNA in every modality.
    rng_genes, rng_cells, rng_rna, rng_peaks, rng_atac = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )

    # Genes and programs.
    genes = table.iloc[np.sort(rng_genes.choice(len(table), size=n_genes, replace=False))]
    genes = genes.reset_index(drop=True)
    program_mask = _draw_programs(
        rng_genes, n_genes, n_programs, gpp_min, gpp_max, program_overlap
    )
    gene_weights = np.where(program_mask, rng_genes.uniform(0.4, 1.2, program_mask.shape), 0.0)
    gene_baseline = rng_genes.normal(0.0, 1.0, n_genes)
    gene_batch = rng_genes.normal(0.0, batch_effect, (n_batches, n_genes))
    active = np.zeros(n_programs, dtype=bool)
    active[rng_genes.choice(n_programs, size=n_active, replace=False)] = True

    # Cells: types, batches, program activities.
    type_props = rng_cells.dirichlet(np.full(n_cell_types, 5.0))
    cell_type = rng_cells.choice(n_cell_types, size=n_cells, p=type_props)
    batch = rng_cells.integers(n_batches, size=n_cells)
    profiles = _draw_profiles(rng_cells, n_cell_types, active)
    # Unused programs sit below zero so that most cells have exactly zero activity in them.
    level = np.where(profiles > 0, profiles, -1.0)
    noise = rng_cells.normal(0.0, activity_noise, (n_cells, n_programs))
    activity = np.maximum(level[cell_type] + noise, 0.0)
    activity[:, ~active] = 0.0
    rna_lib = _lognormal(rng_cells, library_size, library_size_sd, n_cells)
    atac_lib = _lognormal(rng_cells, atac_library_size or 1.0, library_size_sd, n_cells)

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(
                cell_type, categories=[f"type_{i}" for i in range(n_cell_types)]
            ),
            "batch": pd.Categorical.from_codes(
                batch, categories=[f"batch_{i}" for i in range(n_batches)]
            ),
        },
        index=[f"cell_{i:0{max(4, len(str(n_cells - 1)))}d}" for i in range(n_cells)],
    )
    width = max(2, len(str(n_programs - 1)))
    program_names = [f"program_{k:0{width}d}" for k in range(n_programs)]
    info = {
        "program_names": program_names,
        "active_programs": active,
        "cell_type_names": list(obs["cell_type"].cat.categories),
        "cell_type_profiles": profiles,
        "batch_names": list(obs["batch"].cat.categories),
        "seed": int(seed),
        "n_cells": int(n_cells),
        "n_genes": int(n_genes),
        "n_peaks": int(n_peaks),
        "modality": modality,
        "n_programs": int(n_programs),
        "n_active": int(n_active),
        "genes_per_program": [int(gpp_min), int(gpp_max)],
        "n_cell_types": int(n_cell_types),
        "n_batches": int(n_batches),
        "library_size": float(library_size),
        "dispersion": float(dispersion),
        "batch_effect": float(batch_effect),
        "program_overlap": float(program_overlap),
        "activity_noise": float(activity_noise),
        "library_size_sd": float(library_size_sd),
        "atac_library_size": float(atac_library_size),
        "background_peaks": float(background_peaks),
        "peak_window": int(peak_window),
        "peak_width": int(peak_width),
    }

    modalities = {}
    if with_rna:
        counts = _sample_counts(
            rng_rna,
            activity,
            gene_weights,
            gene_baseline,
            gene_batch,
            batch,
            rna_lib,
            dispersion,
            n_jobs,
        )
        var = pd.DataFrame(
            {
                "chrom": genes["chrom"].to_numpy(),
                "start": genes["start"].to_numpy(np.int64),
                "end": genes["end"].to_numpy(np.int64),
                "strand": genes["strand"].to_numpy(),
                "feature_types": "Gene Expression",
            },
            index=pd.Index(genes["gene"].to_numpy(), name=None),
        )
        modalities["rna"] = _to_anndata(
            counts, obs, var, rna_lib, program_mask, gene_weights, gene_batch, info
        )
    if with_atac:
        peaks, peak_gene = _place_peaks(
            rng_peaks,
            genes,
            table,
            program_mask,
            n_peaks,
            background_peaks,
            peak_window,
            peak_width,
        )
        linked = peak_gene >= 0
        peak_mask = np.zeros((n_peaks, n_programs), dtype=bool)
        peak_mask[linked] = program_mask[peak_gene[linked]]
        peak_weights = np.where(peak_mask, rng_peaks.uniform(0.5, 1.5, peak_mask.shape), 0.0)
        peak_baseline = rng_peaks.normal(0.0, 0.5, n_peaks)
        peak_batch = rng_peaks.normal(0.0, batch_effect, (n_batches, n_peaks))
        counts = _sample_counts(
            rng_atac,
            activity,
            peak_weights,
            peak_baseline,
            peak_batch,
            batch,
            atac_lib,
            None,
            n_jobs,
        )
        peaks["feature_types"] = "Peaks"
        modalities["atac"] = _to_anndata(
            counts, obs, peaks, atac_lib, peak_mask, peak_weights, peak_batch, info
        )

    if modality != "multiome":
        adata = modalities[modality]
        adata.obsm["true_activity"] = activity.astype(np.float32)
        return adata

    import mudata

    # The shared annotations are set globally below; pulling every modality's columns would only
    # add prefixed copies ("rna:cell_type", ...), and mudata >= 0.4 no longer pulls by default.
    with mudata.set_options(pull_on_update=False):
        mdata = mudata.MuData(modalities)
        mdata.update()
    mdata.obs["cell_type"] = obs["cell_type"].loc[mdata.obs_names]
    mdata.obs["batch"] = obs["batch"].loc[mdata.obs_names]
    mdata.obsm["true_activity"] = activity.astype(np.float32)
    mdata.uns["simulation"] = _copy_info(info)
    return mdata


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")


def _check_nonnegative(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}.")


def _load_gene_table() -> pd.DataFrame:
    """Genes on chr1-22 and chrX of the bundled hg38 table, in genome order."""
    from ._datasets import gene_positions

    table = gene_positions()
    table = table[table["chrom"].isin(_CHROMOSOMES)].drop_duplicates("gene")
    table["chrom_order"] = table["chrom"].map({c: i for i, c in enumerate(_CHROMOSOMES)})
    table = table.sort_values(["chrom_order", "start", "gene"], kind="stable")
    return table.reset_index(drop=True)


def _draw_programs(
    rng: np.random.Generator,
    n_genes: int,
    n_programs: int,
    size_min: int,
    size_max: int,
    overlap: float,
) -> np.ndarray:
    """Boolean genes x programs membership; part of each program is drawn from earlier ones."""
    mask = np.zeros((n_genes, n_programs), dtype=bool)
    for k in range(n_programs):
        size = int(rng.integers(size_min, size_max + 1))
        used = np.flatnonzero(mask[:, :k].any(axis=1))
        n_shared = min(int(round(overlap * size)), used.size)
        shared = rng.choice(used, size=n_shared, replace=False) if n_shared else used[:0]
        rest = np.setdiff1d(np.arange(n_genes), shared)
        own = rng.choice(rest, size=size - n_shared, replace=False)
        mask[shared, k] = True
        mask[own, k] = True
    return mask


def _draw_profiles(rng: np.random.Generator, n_cell_types: int, active: np.ndarray) -> np.ndarray:
    """Cell types x programs mean activity; each active program is used by at least one type."""
    profiles = np.zeros((n_cell_types, active.size))
    active_idx = rng.permutation(np.flatnonzero(active))
    if active_idx.size == 0:
        return profiles
    uses = np.zeros((n_cell_types, active_idx.size), dtype=bool)
    # Round robin so that every program has a type and every type has a program.
    for i in range(max(n_cell_types, active_idx.size)):
        uses[i % n_cell_types, i % active_idx.size] = True
    # Some extra sharing so that programs are not simply cell-type indicators.
    uses |= rng.random(uses.shape) < 0.1
    levels = rng.uniform(1.0, 2.0, uses.shape)
    profiles[:, active_idx] = np.where(uses, levels, 0.0)
    return profiles


def _lognormal(rng: np.random.Generator, mean: float, sd: float, size: int) -> np.ndarray:
    """Lognormal draws with the given mean (not median)."""
    return mean * np.exp(rng.normal(-0.5 * sd**2, sd, size))


def _sample_counts(
    rng: np.random.Generator,
    activity: np.ndarray,
    weights: np.ndarray,
    baseline: np.ndarray,
    batch_offset: np.ndarray,
    batch: np.ndarray,
    library: np.ndarray,
    theta: float | None,
    n_jobs: int,
) -> sparse.csr_matrix:
    """Negative binomial (or Poisson if ``theta`` is None) counts, drawn in blocks of cells.

    Each block has its own child generator, so the result does not depend on ``n_jobs``; numpy's
    samplers and BLAS release the GIL, so threads run blocks in parallel.
    """
    n_cells, n_features = activity.shape[0], weights.shape[0]
    block = max(1, _BLOCK_ENTRIES // n_features)
    starts = list(range(0, n_cells, block))
    block_rngs = rng.spawn(len(starts))
    weights_t = np.ascontiguousarray(weights.T)

    def draw(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block_rng = block_rngs[i]
        rows = slice(starts[i], min(starts[i] + block, n_cells))
        rate = activity[rows] @ weights_t
        rate += baseline
        rate += batch_offset[batch[rows]]
        rate -= rate.max(axis=1, keepdims=True)
        np.exp(rate, out=rate)
        rate *= (library[rows] / rate.sum(axis=1))[:, None]
        if theta is not None:
            # Gamma-Poisson mixture: mean `rate`, variance rate + rate^2 / theta.
            rate *= block_rng.standard_gamma(theta, size=rate.shape) / theta
        counts = block_rng.poisson(rate)
        del rate
        flat = np.flatnonzero(counts)
        data = counts.ravel()[flat].astype(np.float32)
        indices = (flat % n_features).astype(np.int32)
        return data, indices, np.count_nonzero(counts, axis=1)

    if n_jobs > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=min(n_jobs, len(starts))) as pool:
            parts = list(pool.map(draw, range(len(starts))))
    else:
        parts = [draw(i) for i in range(len(starts))]
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.concatenate([p[2] for p in parts]), out=indptr[1:])
    data = np.concatenate([p[0] for p in parts])
    indices = np.concatenate([p[1] for p in parts])
    del parts
    if indptr[-1] <= np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    else:
        indices = indices.astype(np.int64)
    return sparse.csr_matrix((data, indices, indptr), shape=(n_cells, n_features))


def _place_peaks(
    rng: np.random.Generator,
    genes: pd.DataFrame,
    table: pd.DataFrame,
    program_mask: np.ndarray,
    n_peaks: int,
    background: float,
    window: int,
    width: int,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Non-overlapping peaks near gene TSSs plus background peaks; returns var and gene index."""
    n_genes = len(genes)
    n_background = int(round(background * n_peaks))
    n_linked = n_peaks - n_background
    # Genes in more programs get more peaks, as regulated genes tend to have more elements.
    gene_prob = 1.0 + program_mask.sum(axis=1)
    peak_gene = rng.choice(n_genes, size=n_linked, p=gene_prob / gene_prob.sum())
    peak_gene = np.concatenate([peak_gene, np.full(n_background, -1)])
    chrom_order = {c: i for i, c in enumerate(_CHROMOSOMES)}
    gene_chrom = genes["chrom"].map(chrom_order).to_numpy()
    plus_strand = genes["strand"].to_numpy() == "+"
    tss = np.where(plus_strand, genes["start"], genes["end"]).astype(np.int64)
    # Grid slots k (peak = [k * width, (k + 1) * width)) that lie entirely within the window.
    slot_lo = np.maximum(0, -(-(tss - window) // width))
    slot_hi = np.maximum(slot_lo, (tss + window - width) // width)  # inclusive
    chrom_len = table.groupby("chrom")["end"].max().reindex(_CHROMOSOMES).to_numpy()
    chrom_slots = chrom_len // width

    chrom = np.empty(n_peaks, dtype=np.int64)
    slot = np.empty(n_peaks, dtype=np.int64)
    linked = peak_gene >= 0
    chrom[linked] = gene_chrom[peak_gene[linked]]

    def draw(which: np.ndarray, near_tss: bool) -> None:
        lnk = which & linked
        g = peak_gene[lnk]
        if near_tss:
            # Most regulatory peaks are close to the promoter.
            centre = tss[g] + rng.laplace(0.0, window / 5, g.size)
            slot[lnk] = np.clip(np.floor(centre / width), slot_lo[g], slot_hi[g])
        else:
            slot[lnk] = rng.integers(slot_lo[g], slot_hi[g] + 1)
        bg = which & ~linked
        chrom[bg] = rng.choice(len(_CHROMOSOMES), size=bg.sum(), p=chrom_len / chrom_len.sum())
        slot[bg] = rng.integers(0, chrom_slots[chrom[bg]])

    draw(np.ones(n_peaks, dtype=bool), near_tss=True)
    for _ in range(100):
        key = chrom * (chrom_slots.max() + 1) + slot
        dup = pd.Series(key).duplicated().to_numpy()
        if not dup.any():
            break
        draw(dup, near_tss=False)
    else:
        raise ValueError(
            f"Could not place {n_peaks} non-overlapping peaks; decrease n_peaks or peak_width, "
            "or increase n_genes or peak_window."
        )

    order = np.lexsort((slot, chrom))
    chrom, slot, peak_gene = chrom[order], slot[order], peak_gene[order]
    chrom_names = np.asarray(_CHROMOSOMES, dtype=object)[chrom]
    start = slot * width
    end = start + width
    gene_names = np.where(peak_gene >= 0, genes["gene"].to_numpy()[np.maximum(peak_gene, 0)], "")
    names = [f"{c}:{s}-{e}" for c, s, e in zip(chrom_names, start, end)]
    var = pd.DataFrame(
        {"chrom": chrom_names, "start": start, "end": end, "gene": gene_names.astype(object)},
        index=names,
    )
    return var, peak_gene


def _copy_info(info: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray | list) else v) for k, v in info.items()}


def _to_anndata(
    counts: sparse.csr_matrix,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    library: np.ndarray,
    mask: np.ndarray,
    weights: np.ndarray,
    batch_offset: np.ndarray,
    info: dict,
) -> AnnData:
    obs = obs.copy()
    obs["true_library_size"] = library
    adata = AnnData(X=counts, obs=obs, var=var)
    adata.layers["counts"] = counts.copy()
    adata.varm["true_programs"] = mask
    adata.varm["true_weights"] = weights.astype(np.float32)
    adata.varm["true_batch_effect"] = np.ascontiguousarray(batch_offset.T, dtype=np.float32)
    adata.uns["simulation"] = _copy_info(info)
    return adata
