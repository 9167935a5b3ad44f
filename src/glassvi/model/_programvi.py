"""ProgramVI: a VAE whose latent units are named gene programs, for RNA, ATAC and multiome."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData
from scipy import sparse
from scvi.data import fields

from ..module import ProgramVAE
from ..pp._utils import to_bool_values
from ._base import GlassModelBase

logger = logging.getLogger(__name__)

_ROLES = ("rna", "atac")


def _program_registry_key(role: str) -> str:
    """Registry key of the program mask of one modality role."""
    return f"program_mask_{role}"


_PROGRAM_REGISTRY_KEYS = tuple(_program_registry_key(r) for r in _ROLES)


def _read_mask(container: AnnData, key: str, where: str) -> tuple[np.ndarray, list[str]]:
    """Validated boolean mask (features x programs) and program names of one modality."""
    if key not in container.varm:
        available = list(container.varm.keys())
        raise KeyError(
            f"program mask {key!r} not found in {where}.varm (keys: {available}); build it "
            "with glassvi.pp.add_programs (or glassvi.pp.add_peak_programs for peaks) or pass "
            "program_key=..."
        )
    stored = container.varm[key]
    what = f"{where}.varm[{key!r}]"
    if isinstance(stored, pd.DataFrame):
        names = [str(c) for c in stored.columns]
        values = stored.to_numpy()
    else:
        values = stored
        if getattr(values, "ndim", 2) != 2:
            raise ValueError(f"{what} must be a 2-d features x programs mask.")
        provenance = container.uns.get(key, {})
        uns_names = provenance.get("names") if isinstance(provenance, dict) else None
        if uns_names is not None and len(uns_names) == values.shape[1]:
            names = [str(n) for n in uns_names]
        else:
            names = [f"program_{i}" for i in range(values.shape[1])]
    if values.shape[0] != container.n_vars or values.ndim != 2:
        raise ValueError(
            f"{what} has shape {values.shape}, expected ({container.n_vars}, n_programs)."
        )
    if values.shape[1] == 0:
        raise ValueError(f"{what} has no programs (0 columns).")
    duplicated = pd.Index(names)[pd.Index(names).duplicated()]
    if len(duplicated):
        raise ValueError(
            f"{what} has duplicated program names, e.g. {list(duplicated[:3])}; names must be "
            "unique."
        )
    mask = to_bool_values(values, names, what)
    if sparse.issparse(mask):
        mask = mask.toarray()
    return np.ascontiguousarray(mask, dtype=bool), names


class ProgramVI(GlassModelBase):
    """Gene-program VAE: every latent unit is a named program, for RNA, ATAC or multiome.

    The decoder of each modality is linear and masked: latent unit ``k`` can only drive the
    features of program ``k`` (its genes, and in multiome data also the peaks linked to them),
    as in VEGA and expiMap :cite:p:`Lotfollahi2023`. ``n_denovo`` extra units may use any
    feature and capture variation that no annotated program explains. With non-negative
    weights (the default), a high activity always means high expression (or accessibility) of
    the program's members, so activities have a sign and a meaning.

    The masks are registered with the data (``setup_anndata``/``setup_mudata``); build them
    with :func:`glassvi.pp.add_programs` and, for peaks, :func:`glassvi.pp.add_peak_programs`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata` or MuData registered with
        :meth:`setup_mudata`.
    n_denovo
        Number of unannotated latent units that may use any feature.
    mask_mode
        ``"hard"`` (default): a program's weights exist only for its members. They are stored
        as an indexed vector, so memory and time scale with the number of memberships (thousands
        of GO programs over a whole transcriptome train in a few GB). ``"soft"``: weights outside
        the mask are allowed but L1-penalised by a proximal step, so they are exactly zero unless
        the data need them; this recovers members missing from the annotation, at the cost of a
        dense features x programs matrix.
    soft_penalty
        Strength of the L1 penalty on weights outside a soft mask: after each optimiser step
        they are shrunk towards zero by ``lr * soft_penalty``. With the default Adam optimiser a
        weight survives only if its updates consistently point away from zero; ``0.5`` keeps the
        members the data support and removes the rest, values near 1 remove almost all.
    group_lasso
        Strength of the group-lasso penalty that switches off whole programs the data do not
        support (their weights in every modality become exactly zero); ``0`` (default) turns it
        off. After each step a program's weight norm is shrunk by
        ``lr * group_lasso * sqrt(n_members)``; values between 0.1 and 0.5 are typical.
    nonnegative
        Constrain decoder weights to be non-negative (default).
    likelihood
        ``"nb"`` (default for RNA), ``"zinb"``, ``"poisson"`` or ``"bernoulli"`` (default for
        ATAC), or a dict per modality, as in :class:`~glassvi.model.LinearVI`.
    n_hidden
        Width of the encoder's hidden layers.
    n_layers
        Number of hidden layers of the encoder.
    dropout_rate
        Encoder dropout.
    dispersion
        ``"gene"`` or ``"gene-batch"`` inverse dispersion of (ZI)NB likelihoods.
    classifier
        Train a linear cell-label head on the program activities, so the logit of each class is
        a weighted sum of programs. ``None`` (default) adds it when a ``labels_key`` with at
        least two labels was registered.
    **module_kwargs
        Further keyword arguments of :class:`~glassvi.module.ProgramVAE`.

    Examples
    --------
    >>> import glassvi
    >>> adata = glassvi.data.immune1k()
    >>> glassvi.pp.add_programs(adata, glassvi.data.hallmark())
    >>> glassvi.model.ProgramVI.setup_anndata(adata, layer="counts")
    >>> model = glassvi.model.ProgramVI(adata, n_denovo=2)
    >>> model.train(max_epochs=100)
    >>> model.explain()  # obsm["X_programvi"], varm["programvi_weights"], uns["programvi"]
    >>> model.get_program_genes("HALLMARK_INTERFERON_ALPHA_RESPONSE").head()
    """

    _module_cls = ProgramVAE
    _prefix = "programvi"
    _weights_suffix = "weights"

    def __init__(
        self,
        adata: AnnData | MuData | None = None,
        n_denovo: int = 0,
        mask_mode: Literal["hard", "soft"] = "hard",
        soft_penalty: float = 0.5,
        group_lasso: float = 0.0,
        nonnegative: bool = True,
        likelihood: str | dict[str, str] | None = None,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch"] = "gene",
        classifier: bool | None = None,
        **module_kwargs,
    ):
        if n_denovo < 0:
            raise ValueError(f"n_denovo must be >= 0, got {n_denovo}.")
        if mask_mode not in ("hard", "soft"):
            raise ValueError(f"mask_mode must be 'hard' or 'soft', got {mask_mode!r}.")
        if soft_penalty < 0:
            raise ValueError(f"soft_penalty must be >= 0, got {soft_penalty}.")
        if group_lasso < 0:
            raise ValueError(f"group_lasso must be >= 0, got {group_lasso}.")
        super().__init__(adata)
        kwargs = self._module_kwargs_from_registry(likelihood, classifier=classifier)
        names, masks = self._program_masks_of(
            self.adata, self.adata_manager.registry["setup_args"]
        )
        self._program_names = names
        self.module = self._module_cls(
            **kwargs,
            program_masks={role: torch.from_numpy(m) for role, m in masks.items()},
            n_denovo=n_denovo,
            mask_mode=mask_mode,
            soft_penalty=soft_penalty,
            group_lasso=group_lasso,
            nonnegative=nonnegative,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            **module_kwargs,
        )
        n_members = {role: int(m.sum()) for role, m in masks.items()}
        self._model_summary_string = (
            f"ProgramVI: {len(names)} programs ({n_members} memberships), {n_denovo} de novo, "
            f"{mask_mode} mask, group_lasso {group_lasso}, modalities {kwargs['likelihoods']}, "
            f"n_batch {kwargs['n_batch']}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------------- masks
    @classmethod
    def _program_masks_of(
        cls, adata: AnnData | MuData, setup_args: dict
    ) -> tuple[list[str], dict[str, np.ndarray]]:
        """Program names and aligned masks (role -> features x programs) of registered data."""
        per_role = {}
        if isinstance(adata, MuData):
            mods = setup_args.get("modalities") or {}
            for role in _ROLES:
                mod = mods.get(f"{role}_layer")
                if mod is None:
                    continue
                key = cls._program_key_for(setup_args["program_key"], role)
                per_role[role] = _read_mask(adata[mod], key, f"mdata[{mod!r}]")
        else:
            role = setup_args.get("modality", "rna")
            per_role[role] = _read_mask(adata, setup_args["program_key"], "adata")
        return _align_programs(per_role)

    @staticmethod
    def _program_key_for(program_key: str | dict, role: str) -> str:
        if isinstance(program_key, str):
            return program_key
        if role not in program_key:
            raise KeyError(
                f"program_key has no entry for the {role!r} modality; pass a dict with keys "
                f"{list(_ROLES)} (the modelled ones) or one key for all modalities."
            )
        return program_key[role]

    @property
    def program_names(self) -> list[str]:
        """Names of the annotated programs, in latent order."""
        return list(self._program_names)

    def _latent_names(self) -> list[str]:
        return self.program_names + [f"denovo_{i}" for i in range(self.module.n_denovo)]

    # ------------------------------------------------------------------------- data loading
    def _loader_keys(self, adata=None) -> list[str]:
        """Registry keys the data loader must load: everything but the varm program masks.

        A registered ``varm`` field has one row per feature, not per cell; left in the loader's
        default keys it would be sliced by cell index.
        """
        manager = self.get_anndata_manager(adata) if adata is not None else self.adata_manager
        manager = manager or self.adata_manager
        return [k for k in manager.data_registry if k not in _PROGRAM_REGISTRY_KEYS]

    def _make_data_loader(
        self,
        adata,
        indices=None,
        batch_size=None,
        shuffle=False,
        data_loader_class=None,
        **data_loader_kwargs,
    ):
        data_loader_kwargs.setdefault("data_and_attributes", self._loader_keys(adata))
        return super()._make_data_loader(
            adata,
            indices=indices,
            batch_size=batch_size,
            shuffle=shuffle,
            data_loader_class=data_loader_class,
            **data_loader_kwargs,
        )

    def train(self, *args, datasplitter_kwargs: dict | None = None, **kwargs):
        """Train the model; arguments of :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`.

        The program masks are registered data fields but are never loaded in minibatches.

        Examples
        --------
        >>> model.train(max_epochs=100, batch_size=128)
        """
        datasplitter_kwargs = dict(datasplitter_kwargs or {})
        datasplitter_kwargs.setdefault("data_and_attributes", self._loader_keys())
        return super().train(*args, datasplitter_kwargs=datasplitter_kwargs, **kwargs)

    # ------------------------------------------------------------------------- outputs
    @torch.inference_mode()
    def get_program_activity(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Activity of every program in every cell: the posterior mean of its latent unit.

        Parameters
        ----------
        adata
            Data set up like the training data (with the same program masks); defaults to the
            training data.
        indices
            Cells to use; default all.
        batch_size
            Minibatch size.

        Returns
        -------
        DataFrame cells x latent units (programs in mask order, then ``denovo_0``, ...),
        indexed by ``obs_names``. Deterministic.

        Examples
        --------
        >>> activity = model.get_program_activity()
        >>> activity.groupby(adata.obs["cell_type"]).mean()
        """
        adata = self._validate_anndata(adata)
        latent = self.get_latent_representation(adata, indices=indices, batch_size=batch_size)
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        return pd.DataFrame(latent, index=obs_names, columns=self._latent_names())

    def _unit_index(self, program: str | int) -> int:
        names = self._latent_names()
        if isinstance(program, int | np.integer):
            if not 0 <= program < len(names):
                raise IndexError(f"program index {program} out of range (0..{len(names) - 1}).")
            return int(program)
        if program not in names:
            close = [n for n in names if str(program).lower() in n.lower()][:5]
            hint = f"; did you mean one of {close}?" if close else ""
            raise KeyError(f"program {program!r} is not a latent unit of this model{hint}")
        return names.index(program)

    @torch.inference_mode()
    def get_program_genes(self, program: str | int, modality: str | None = None) -> pd.DataFrame:
        """Features of one program ranked by their decoder weight.

        Parameters
        ----------
        program
            Program name (or de novo unit ``"denovo_0"``, ...) or its latent index.
        modality
            ``"rna"`` or ``"atac"``; ``None`` ranks the features of all modalities together.

        Returns
        -------
        DataFrame indexed by feature name with columns ``weight``, ``in_mask`` (whether the
        feature is an annotated member of the program; ``False`` for de novo units) and
        ``modality``; sorted by decreasing weight, members first among ties. Features with zero
        weight that are not members are left out.

        Examples
        --------
        >>> model.get_program_genes("HALLMARK_INTERFERON_ALPHA_RESPONSE").head(10)
        """
        k = self._unit_index(program)
        frames = []
        for role in self._check_modality(modality):
            dec = self.module.decoders[role]
            weight = dec.program_column(k).detach().cpu().numpy()
            in_mask = np.zeros(dec.n_features, dtype=bool)
            if k < dec.n_programs:
                if dec.indexed:
                    in_mask[dec.program_rows[dec.program_cols == k].cpu().numpy()] = True
                else:
                    in_mask = dec.program_mask[:, k].cpu().numpy().copy()
            frame = pd.DataFrame(
                {"weight": weight, "in_mask": in_mask, "modality": role},
                index=self._var_names(role),
            )
            frames.append(frame[(frame["weight"] != 0) | frame["in_mask"]])
        out = pd.concat(frames, axis=0) if len(frames) > 1 else frames[0]
        return out.sort_values(["weight", "in_mask"], ascending=False, kind="stable")

    def get_program_weights(self, modality: str | None = None) -> pd.DataFrame:
        """Decoder weights: features x latent units (programs, then de novo units).

        Parameters
        ----------
        modality
            ``"rna"`` or ``"atac"``; ``None`` stacks all modalities (genes, then peaks).

        Returns
        -------
        Dense DataFrame indexed by feature names with one column per latent unit.

        Examples
        --------
        >>> model.get_program_weights("rna").iloc[:5, :3]
        """
        return self._weights_frame(modality)

    @torch.inference_mode()
    def active_programs(self, tol: float = 0.0) -> pd.Series:
        """Which latent units have any decoder weight above ``tol`` in norm.

        With ``group_lasso > 0``, programs that the data do not support have exactly zero
        weights and are reported inactive.

        Parameters
        ----------
        tol
            A unit is active if the norm of its weights over all modalities exceeds ``tol``.

        Returns
        -------
        Boolean Series indexed by latent unit name, named ``"active"``; the weight norms are
        in its ``attrs["norm"]``.

        Examples
        --------
        >>> active = model.active_programs()
        >>> active[~active].index  # programs switched off by the group lasso
        """
        norms = self.module.program_norms().cpu().numpy()
        out = pd.Series(norms > tol, index=self._latent_names(), name="active")
        out.attrs["norm"] = pd.Series(norms, index=out.index, name="norm")
        return out

    def _intrinsic_results(self, adata, key_added: str, batch_size: int | None) -> dict:
        results = super()._intrinsic_results(adata, key_added, batch_size)
        active = self.active_programs()
        meta = results["uns"][key_added]
        meta["programs"] = np.asarray(self.program_names, dtype=object)
        meta["params"].update(
            {
                "n_programs": int(self.module.n_programs),
                "n_denovo": int(self.module.n_denovo),
                "mask_mode": self.module.mask_mode,
                "group_lasso": float(self.module.group_lasso),
                "soft_penalty": float(self.module.soft_penalty),
                "nonnegative": bool(self.module.nonnegative),
            }
        )
        meta["active"] = active.to_numpy()
        meta["weight_norm"] = active.attrs["norm"].to_numpy()
        return results

    # ------------------------------------------------------------------------- differential
    @torch.inference_mode()
    def differential_programs(
        self,
        groupby: str,
        group1: str | Sequence[str],
        group2: str | Sequence[str] | None = None,
        *,
        mode: Literal["change", "vanilla"] = "change",
        delta: float = 0.25,
        fdr_target: float = 0.05,
        n_samples: int = 5000,
        adata: AnnData | MuData | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        key_added: str | None = "programvi_differential",
    ) -> pd.DataFrame:
        """Bayesian test of differential program activity between two groups of cells.

        Activities are drawn from the approximate posterior ``q(z | x)`` of cells drawn at
        random from each group, and paired (as in scvi-tools' differential expression). With
        ``mode="change"``, the probability that a program differs is ``P(|z1 - z2| > delta)``;
        with ``mode="vanilla"`` it is ``max(P(z1 > z2), P(z1 < z2))``. The Bayes factor is
        ``log(p / (1 - p))`` of the probability ``p`` of the hypothesis tested (``|z1 - z2| >
        delta``, or ``z1 > z2`` for vanilla, so negative values favour ``z1 < z2``). Programs are
        called significant by controlling the posterior expected false discovery rate at
        ``fdr_target``: the programs with the highest probabilities are selected while the mean
        of ``1 - p`` over the selection stays below the target.

        Parameters
        ----------
        groupby
            ``obs`` column (``mdata.obs`` for MuData) with the groups.
        group1
            Category (or list of categories) of the first group.
        group2
            Category (or list) of the second group; ``None`` compares with all other cells.
        mode
            ``"change"`` (default) or ``"vanilla"``.
        delta
            Smallest difference of activity, in latent (prior standard deviation) units, that
            counts as a change in ``"change"`` mode.
        fdr_target
            Target posterior expected false discovery rate.
        n_samples
            Number of paired posterior samples per program.
        adata
            Data set up like the training data; default the training data.
        batch_size
            Minibatch size for the encoder.
        seed
            Seed of the random draws; the result is deterministic for a given seed.
        key_added
            Key of ``adata.uns`` where the result (``{"params": ..., "results": DataFrame}``)
            is recorded; ``None`` records nothing.

        Returns
        -------
        DataFrame indexed by program (latent unit), sorted by decreasing probability, with
        columns ``proba`` (probability of a difference), ``proba_not`` (``1 - proba``),
        ``bayes_factor``, ``effect_size`` (posterior mean of ``z1 - z2``), ``effect_median``,
        ``effect_std``, ``mean1`` and ``mean2`` (mean posterior-mean activity of each group),
        ``frac_up`` (``P(z1 > z2)``) and ``is_significant``.

        Examples
        --------
        >>> res = model.differential_programs("cell_type", "MDC", ["CD4_T", "CD8_T"])
        >>> res[res.is_significant].head()
        """
        if mode not in ("change", "vanilla"):
            raise ValueError(f"mode must be 'change' or 'vanilla', got {mode!r}.")
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}.")
        if not 0 < fdr_target < 1:
            raise ValueError(f"fdr_target must be in (0, 1), got {fdr_target}.")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
        adata = self._validate_anndata(adata)
        idx1, idx2, labels = _group_indices(adata.obs, groupby, group1, group2)

        rng = np.random.default_rng(seed)
        draws = []
        for idx in (idx1, idx2):
            loc, var = self.get_latent_representation(
                adata, indices=idx, batch_size=batch_size, return_dist=True
            )
            pick = rng.integers(0, len(idx), size=n_samples)
            noise = rng.standard_normal((n_samples, loc.shape[1])).astype(loc.dtype)
            draws.append((loc[pick] + np.sqrt(var[pick]) * noise, loc.mean(0)))
        (z1, mean1), (z2, mean2) = draws
        diff = z1 - z2
        frac_up = (diff > 0).mean(0)
        eps = 1e-8
        if mode == "change":
            proba = (np.abs(diff) > delta).mean(0)
            bayes = np.log(proba + eps) - np.log(1 - proba + eps)
        else:
            proba = np.maximum(frac_up, 1 - frac_up)
            bayes = np.log(frac_up + eps) - np.log(1 - frac_up + eps)
        result = pd.DataFrame(
            {
                "proba": proba,
                "proba_not": 1 - proba,
                "bayes_factor": bayes,
                "effect_size": diff.mean(0),
                "effect_median": np.median(diff, axis=0),
                "effect_std": diff.std(0),
                "mean1": mean1,
                "mean2": mean2,
                "frac_up": frac_up,
            },
            index=pd.Index(self._latent_names(), name="program"),
        )
        result = result.sort_values("proba", ascending=False, kind="stable")
        expected_fdr = np.cumsum(result["proba_not"].to_numpy()) / np.arange(1, len(result) + 1)
        n_sig = int(np.sum(expected_fdr <= fdr_target)) and int(
            np.max(np.flatnonzero(expected_fdr <= fdr_target)) + 1
        )
        result["is_significant"] = np.arange(len(result)) < n_sig
        if key_added is not None:
            params = {
                "groupby": groupby,
                "group1": labels[0],
                "group2": labels[1],
                "mode": mode,
                "delta": float(delta),
                "fdr_target": float(fdr_target),
                "n_samples": int(n_samples),
                "n_cells1": len(idx1),
                "n_cells2": len(idx2),
                "seed": int(seed),
            }
            self._write_results(
                adata,
                {
                    "obsm": {},
                    "varm": {},
                    "uns": {key_added: {"params": params, "results": result}},
                },
            )
        return result

    # ------------------------------------------------------------------------- setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        size_factor_key: str | None = None,
        modality: Literal["rna", "atac"] = "rna",
        program_key: str = "programs",
        unlabeled_category: str = "Unknown",
        **kwargs,
    ) -> None:
        """Register an AnnData of one modality's counts and its program mask with ProgramVI.

        The counts, keys and the mask are checked first and nothing is written to ``adata`` if
        a check fails. The mask is registered as a ``varm`` field of the AnnData (so it is
        validated and stored with the model).

        Parameters
        ----------
        adata
            AnnData of raw counts (cells x genes, or cells x peaks).
        layer
            Layer holding the counts; ``None`` uses ``adata.X``.
        batch_key
            ``obs`` column of batches.
        labels_key
            ``obs`` column of cell labels.
        categorical_covariate_keys
            ``obs`` columns of extra categorical covariates.
        continuous_covariate_keys
            ``obs`` columns of extra continuous covariates.
        size_factor_key
            ``obs`` column of per-cell size factors.
        modality
            ``"rna"`` (default) or ``"atac"``.
        program_key
            Key of the boolean features x programs mask in ``adata.varm``, as written by
            :func:`glassvi.pp.add_programs`. Program names are the DataFrame's columns (or
            ``adata.uns[program_key]["names"]`` for an array).
        unlabeled_category
            Value of ``labels_key`` that marks unlabelled cells (semi-supervised training).

        Raises
        ------
        KeyError
            If ``program_key`` is not in ``adata.varm`` (or another key is missing).
        ValueError
            If the mask is not boolean (or 0/1), has no programs, duplicated names, or no
            feature in any program.

        Examples
        --------
        >>> glassvi.pp.add_programs(adata, glassvi.data.hallmark())
        >>> glassvi.model.ProgramVI.setup_anndata(adata, layer="counts", batch_key="batch")
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        obs_keys = {
            "batch_key": batch_key,
            "labels_key": labels_key,
            "categorical_covariate_keys": categorical_covariate_keys,
            "continuous_covariate_keys": continuous_covariate_keys,
            "size_factor_key": size_factor_key,
        }
        if not isinstance(program_key, str):
            raise TypeError(f"program_key must be a string, got {type(program_key).__name__}.")
        cls._check_setup_anndata(adata, modality, layer, obs_keys)
        cls._check_masks({modality: _read_mask(adata, program_key, "adata")})
        anndata_fields = cls._setup_anndata_fields(
            layer,
            batch_key,
            labels_key,
            categorical_covariate_keys,
            continuous_covariate_keys,
            size_factor_key,
            unlabeled_category=unlabeled_category,
        )
        anndata_fields.append(
            fields.VarmField(
                _program_registry_key(modality), program_key, correct_data_format=False
            )
        )
        cls._register(adata, anndata_fields, setup_method_args, **kwargs)

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        atac_layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        size_factor_key: str | list[str] | None = None,
        program_key: str | dict[str, str] = "programs",
        modalities: dict[str, str] | None = None,
        unlabeled_category: str = "Unknown",
        **kwargs,
    ) -> None:
        """Register a MuData of RNA and/or ATAC counts and their program masks.

        Each modelled modality needs a boolean features x programs mask in its ``varm``
        (:func:`glassvi.pp.add_programs` for genes, :func:`glassvi.pp.add_peak_programs` for
        peaks). Programs are matched across modalities by name: a program present in both gets
        weights in both; one present in only one modality is decoded in that modality only.

        Parameters
        ----------
        mdata
            MuData whose modalities hold raw counts of the same cells in the same order.
        rna_layer
            Layer of the RNA modality holding counts; ``None`` uses its ``.X``.
        atac_layer
            Layer of the ATAC modality holding counts.
        batch_key
            Column of batches (``mdata.obs`` or the modality named in ``modalities``).
        labels_key
            Column of cell labels.
        categorical_covariate_keys
            Columns of extra categorical covariates.
        continuous_covariate_keys
            Columns of extra continuous covariates.
        size_factor_key
            Column(s) of size factors, one per modelled modality in the order RNA, ATAC.
        program_key
            ``varm`` key of the masks in every modality, or a dict role -> key, e.g.
            ``{"rna": "programs", "atac": "peak_programs"}``.
        modalities
            Which MuData modality holds each input, e.g.
            ``{"rna_layer": "rna", "atac_layer": "atac"}``; defaults to the modalities named
            ``"rna"`` and ``"atac"``.
        unlabeled_category
            Value of ``labels_key`` that marks unlabelled cells (semi-supervised training).

        Examples
        --------
        >>> glassvi.pp.add_programs(mdata["rna"], "hallmark.gmt")
        >>> glassvi.pp.add_peak_programs(mdata, links=glassvi.pp.link_peaks(mdata["atac"], genes))
        >>> glassvi.model.ProgramVI.setup_mudata(mdata, batch_key="batch")
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        obs_keys = {
            "batch_key": batch_key,
            "labels_key": labels_key,
            "categorical_covariate_keys": categorical_covariate_keys,
            "continuous_covariate_keys": continuous_covariate_keys,
            "size_factor_key": size_factor_key,
        }
        if not isinstance(program_key, str | dict):
            raise TypeError(
                f"program_key must be a string or a dict, got {type(program_key).__name__}."
            )
        modalities = cls._resolve_mudata_modalities(
            mdata, rna_layer, atac_layer, obs_keys, modalities
        )
        masks = {}
        for role in _ROLES:
            mod = modalities.get(f"{role}_layer")
            if mod is not None:
                key = cls._program_key_for(program_key, role)
                masks[role] = _read_mask(mdata[mod], key, f"mdata[{mod!r}]")
        cls._check_masks(masks)
        setup_method_args["setup_args"]["modalities"] = modalities
        mudata_fields = cls._setup_mudata_fields(
            modalities,
            rna_layer,
            atac_layer,
            batch_key,
            labels_key,
            categorical_covariate_keys,
            continuous_covariate_keys,
            size_factor_key,
            unlabeled_category=unlabeled_category,
        )
        for role in masks:
            mudata_fields.append(
                fields.MuDataVarmField(
                    _program_registry_key(role),
                    cls._program_key_for(program_key, role),
                    mod_key=modalities[f"{role}_layer"],
                    mod_required=True,
                    correct_data_format=False,
                )
            )
        cls._register(mdata, mudata_fields, setup_method_args, **kwargs)

    @staticmethod
    def _check_masks(masks: dict[str, tuple[np.ndarray, list[str]]]) -> None:
        """No-overlap and empty-program checks over all modalities, before registration."""
        if sum(int(m.sum()) for m, _ in masks.values()) == 0:
            raise ValueError(
                "the program mask has no member at all: no feature belongs to any program "
                "(no overlap between the gene sets and the features?)."
            )
        names, aligned = _align_programs(masks)
        members = sum(m.sum(0) for m in aligned.values())
        n_empty = int((members == 0).sum())
        if n_empty:
            logger.warning(
                "%d of %d programs have no member feature; their latent units cannot drive "
                "anything (e.g. %s).",
                n_empty,
                len(names),
                [names[i] for i in np.flatnonzero(members == 0)[:3]],
            )

    # ------------------------------------------------------------------------- reference mapping
    @classmethod
    def load_query_data(
        cls,
        adata: AnnData | MuData | None = None,
        reference_model: ProgramVI | str | None = None,
        n_denovo_query: int = 0,
        **kwargs,
    ) -> ProgramVI:
        """Map query data onto a trained reference, optionally learning new de novo programs.

        The reference's programs (decoder weights and encoder outputs) stay fixed, so the
        query's activities are on the reference's scale. New batches get their own offsets.
        With ``n_denovo_query > 0`` the model gets that many new de novo units whose decoder
        columns and encoder outputs are trained on the query, to capture variation the
        reference programs do not explain.

        Parameters
        ----------
        adata
            Query data with the reference's features (same order). If it has no program mask
            under the reference's ``program_key``, the reference model's mask is copied into it
            (when ``reference_model`` is a model object); a different mask is an error.
        reference_model
            A trained ProgramVI or the directory it was saved to.
        n_denovo_query
            Number of new de novo units learned on the query.
        **kwargs
            Keyword arguments of :meth:`scvi.model.base.ArchesMixin.load_query_data`.

        Returns
        -------
        A ProgramVI ready to be trained on the query.

        Examples
        --------
        >>> query_model = glassvi.model.ProgramVI.load_query_data(query, model, n_denovo_query=2)
        >>> query_model.train(max_epochs=100)
        """
        from scvi.model.base._archesmixin import _get_loaded_data

        if n_denovo_query < 0:
            raise ValueError(f"n_denovo_query must be >= 0, got {n_denovo_query}.")
        if reference_model is None:
            raise ValueError("reference_model is required.")
        attr_dict, _, ref_state, _ = _get_loaded_data(reference_model, device="cpu")
        setup_args = attr_dict["registry_"]["setup_args"]
        if adata is not None:
            cls._prepare_query_masks(adata, reference_model, setup_args, ref_state)
        model = super().load_query_data(adata, reference_model, **kwargs)
        if kwargs.get("unfrozen", False):
            return model
        model.module.n_frozen = model.module.n_latent
        if n_denovo_query:
            model.module.add_denovo_(n_denovo_query)
            model.init_params_["non_kwargs"]["n_denovo"] = model.module.n_denovo
            logger.info("added %d de novo units trained on the query", n_denovo_query)
        return model

    @classmethod
    def _prepare_query_masks(cls, adata, reference_model, setup_args: dict, ref_state) -> None:
        """Copy the reference's masks into a query that lacks them; refuse different ones."""
        if isinstance(adata, MuData):
            mods = setup_args.get("modalities") or {}
            targets = {
                r: (mods[f"{r}_layer"], f"mdata[{mods[f'{r}_layer']!r}]")
                for r in _ROLES
                if mods.get(f"{r}_layer") is not None
            }
        else:
            targets = {setup_args.get("modality", "rna"): (None, "adata")}
        for role, (mod, where) in targets.items():
            key = cls._program_key_for(setup_args["program_key"], role)
            container = adata[mod] if mod is not None else adata
            if key in container.varm:
                continue
            if not isinstance(reference_model, ProgramVI):
                raise KeyError(
                    f"the query has no program mask {key!r} in {where}.varm; add the "
                    "reference's mask (same features, same programs) or pass the reference "
                    "model object instead of its directory."
                )
            ref_container = reference_model._container(reference_model.adata, role)
            if not ref_container.var_names.equals(container.var_names):
                raise ValueError(
                    f"the query's features in {where} differ from the reference's; subset and "
                    "order them like the reference first (ProgramVI.prepare_query_anndata)."
                )
            container.varm[key] = ref_container.varm[key].copy()
            logger.info("copied the reference's program mask into %s.varm[%r]", where, key)
        _, masks = cls._program_masks_of(adata, setup_args)
        for role, mask in masks.items():
            prefix = f"decoders.{role}."
            if f"{prefix}program_rows" in ref_state:
                ref = np.zeros(mask.shape, dtype=bool)
                n_prog = ref_state["group_weights"].shape[0]
                if n_prog != mask.shape[1]:
                    ref = None
                else:
                    ref[
                        ref_state[f"{prefix}program_rows"].numpy(),
                        ref_state[f"{prefix}program_cols"].numpy(),
                    ] = True
            else:
                ref = ref_state[f"{prefix}program_mask"].numpy()
            if ref is None or ref.shape != mask.shape or not np.array_equal(ref, mask):
                n_diff = (
                    "all" if ref is None or ref.shape != mask.shape else int((ref != mask).sum())
                )
                raise ValueError(
                    f"the query's program mask for {role} differs from the reference's "
                    f"({n_diff} feature-program entries differ); reference programs are fixed, "
                    "so the query must use the same mask."
                )


def _align_programs(
    per_role: dict[str, tuple[np.ndarray, list[str]]],
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Match programs across modalities by name (union, first modality's order first)."""
    roles = list(per_role)
    names: list[str] = list(per_role[roles[0]][1])
    seen = set(names)
    for role in roles[1:]:
        for name in per_role[role][1]:
            if name not in seen:
                names.append(name)
                seen.add(name)
    aligned = {}
    for role in roles:
        mask, own = per_role[role]
        if own == names:
            aligned[role] = mask
            continue
        position = {n: i for i, n in enumerate(names)}
        out = np.zeros((mask.shape[0], len(names)), dtype=bool)
        out[:, [position[n] for n in own]] = mask
        aligned[role] = out
    if len(roles) > 1:
        sets = [set(per_role[r][1]) for r in roles]
        shared = set.intersection(*sets)
        if len(shared) < len(names):
            logger.info(
                "programs matched by name across modalities: %d shared, %d in one modality only",
                len(shared),
                len(names) - len(shared),
            )
        if not shared:
            logger.warning(
                "no program name is shared between modalities; every program is decoded in one "
                "modality only."
            )
    return names, aligned


def _group_indices(obs: pd.DataFrame, groupby: str, group1, group2):
    """Cell indices of the two groups, with clear errors for unknown keys or categories."""
    if groupby not in obs.columns:
        raise KeyError(
            f"groupby {groupby!r} is not a column of obs (columns: {list(obs.columns)})."
        )
    values = obs[groupby].astype(str).to_numpy()
    categories = pd.unique(values)

    def as_list(group, which):
        items = [group] if isinstance(group, str) or not isinstance(group, Sequence) else group
        items = [str(g) for g in items]
        missing = [g for g in items if g not in categories]
        if missing:
            raise KeyError(
                f"{which} {missing} not found in obs[{groupby!r}] (categories: "
                f"{sorted(categories)[:20]})."
            )
        return items

    g1 = as_list(group1, "group1")
    in1 = np.isin(values, g1)
    if group2 is None:
        g2 = None
        in2 = ~in1
    else:
        g2 = as_list(group2, "group2")
        overlap = set(g1) & set(g2)
        if overlap:
            raise ValueError(f"group1 and group2 share categories {sorted(overlap)}.")
        in2 = np.isin(values, g2)
    idx1, idx2 = np.flatnonzero(in1), np.flatnonzero(in2)
    if len(idx1) == 0 or len(idx2) == 0:
        raise ValueError(
            f"both groups need cells: group1 has {len(idx1)}, group2 has {len(idx2)}."
        )
    label1 = g1[0] if len(g1) == 1 else ",".join(g1)
    label2 = "rest" if g2 is None else (g2[0] if len(g2) == 1 else ",".join(g2))
    return idx1, idx2, (label1, label2)
