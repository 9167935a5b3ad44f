"""ProgramVI: a VAE whose latent units are named gene programs, for RNA, ATAC and multiome."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData

from .. import _keys
from ..module import ProgramVAE, expression_moments
from ..train import MinibatchDataset
from . import _evidence
from ._base import GlassModelBase
from ._differential import DifferentialProgramsMixin
from ._docs import setup_docs
from ._io import read_saved_model
from ._masks import (
    PROGRAM_REGISTRY_KEYS,
    ROLES,
    MuDataProgramMaskField,
    ProgramMaskField,
    check_mask_names,
    check_masks,
    program_key_for,
    program_masks_of,
    program_registry_key,
    read_mask,
)
from ._program_evidence import ProgramEvidenceMixin
from ._query import prepare_query_masks, reference_state

logger = logging.getLogger(__name__)

#: from this many programs on, the activity anchor's targets are computed once before training
#: (below, the joint fit costs less per minibatch than the rest of a training step)
CACHED_TARGET_MIN_PROGRAMS = 1000
#: ... where they take at most this many bytes, or no more than the joint fit's inverse
CACHED_TARGET_MAX_BYTES = 2**28


class ProgramVI(ProgramEvidenceMixin, DifferentialProgramsMixin, GlassModelBase):
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
        Number of unannotated latent units that may use any feature. ``None`` (default): 2,
        with either mask. They take up variation that no annotated program explains; without
        them, that signal in a member gene can only go to the programs that list it (FCER1A
        of mast cells makes a dendritic-cell program rank mast cells first). See
        :doc:`/programs`.
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
    activity_anchor
        Weight of the anchor that ties each program's activity to its members' expression
        (default ``20.0``; ``0`` turns it off). During training, ``activity_anchor * n_members
        * (1 - r)`` is added to the loss of every minibatch, where ``r`` is the correlation
        over its cells between the program's posterior-mean activity and its target (see
        ``anchor_target``). It fixes the direction of every program, so that no program is
        carried by a few shared or highly expressed members or flips sign between seeds, and
        leaves the member weights to the likelihood. See :doc:`/programs`.
    anchor_target
        ``"joint"`` (default): a program's target in a cell is its coefficient in a
        least-squares fit of the cell's log-normalised expression on all annotated programs'
        memberships at once (decoupler's MLM, with a ridge on the programs whose members
        other programs also hold, the module's ``anchor_ridge``), so programs that share
        members are told apart. ``"mean"``: the
        mean standardised log-normalised expression of its members (a gene-set score). On
        the simulator the joint target follows the true activities more closely (r 0.92 vs
        0.84 for the targets themselves), see :doc:`/programs`.
    anchor_hidden
        Let the anchor train the encoder's hidden layers too. ``False`` (default): the anchor
        trains only the encoder's output layer (each program's row of the posterior mean) and
        the hidden layers learn from the likelihood alone. With it, the marker programs
        separated their cell types at least as well as the best gene-set scorer in every
        measured run, and the decoys, which read the same hidden layers, do not get features
        fitted to their random members (see :doc:`/programs`). A number in ``[0, 1]`` lets
        that share of the anchor's gradient reach the hidden layers.
    anchor_modalities
        The modalities (``"rna"``, ``"atac"``) whose members' expression makes the anchor's
        target; ``None`` (default): all of them. See :class:`~glassvi.module.ProgramVAE`.
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
    modality_weights
        How much each modality shapes the program activities, in ``[0, 1]``, as in
        :class:`~glassvi.model.LinearVI` (which says how the default, the plain joint model,
        was chosen); ``{"atac": 0.0}`` lets ATAC inform the encoder's input only.
    encoder
        How the program activities are inferred from several modalities, as in
        :class:`~glassvi.model.LinearVI`: ``"joint"`` or ``"experts"`` (a product of
        per-modality experts); ``None`` (default): the experts with several modalities
        (:data:`glassvi.module.MULTIOME_ENCODER`, which gives the measurements: on real
        SNARE-seq cortex the experts' RNA+ATAC programs beat RNA alone in 5 of 6 runs, the joint
        encoder's in 4 of 6), the joint encoder with one.
    n_decoys
        Number of hidden decoy programs trained alongside the annotated ones: random feature
        sets matched to the programs in size and expression. They give
        :meth:`program_evidence` its null distribution and never appear in any output
        (activities, weights, explanations). ``None`` (default): ten per program, at least 100
        and at most 300, or one per program beyond 300 programs, up to 1000, but no more than
        5.5 decoys per feature on average (at least 20), so that large programs in a small
        feature space keep their signal (see ``glassvi.model._evidence.default_n_decoys``);
        ``0`` turns them off (and the p-values with them).
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
    _prefix = _keys.PROGRAMVI
    _weights_suffix = _keys.PROGRAMVI_WEIGHTS

    def __init__(
        self,
        adata: AnnData | MuData | None = None,
        n_denovo: int | None = None,
        mask_mode: Literal["hard", "soft"] = "hard",
        soft_penalty: float = 0.5,
        group_lasso: float = 0.0,
        nonnegative: bool = True,
        activity_anchor: float = 20.0,
        anchor_target: Literal["joint", "mean"] = "joint",
        anchor_hidden: bool | float = False,
        anchor_modalities: list[str] | None = None,
        likelihood: str | dict[str, str] | None = None,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch"] = "gene",
        classifier: bool | None = None,
        modality_weights: dict[str, float] | None = None,
        encoder: Literal["joint", "experts"] | None = None,
        n_decoys: int | None = None,
        **module_kwargs,
    ):
        if n_decoys is not None and n_decoys < 0:
            raise ValueError(f"n_decoys must be >= 0 or None, got {n_decoys}.")
        if n_denovo is None:
            n_denovo = 2
        if n_denovo < 0:
            raise ValueError(f"n_denovo must be >= 0 or None, got {n_denovo}.")
        if mask_mode not in ("hard", "soft"):
            raise ValueError(f"mask_mode must be 'hard' or 'soft', got {mask_mode!r}.")
        if soft_penalty < 0:
            raise ValueError(f"soft_penalty must be >= 0, got {soft_penalty}.")
        if group_lasso < 0:
            raise ValueError(f"group_lasso must be >= 0, got {group_lasso}.")
        if activity_anchor < 0:
            raise ValueError(f"activity_anchor must be >= 0, got {activity_anchor}.")
        if not 0.0 <= float(anchor_hidden) <= 1.0:
            raise ValueError(f"anchor_hidden must be a bool or in [0, 1], got {anchor_hidden}.")
        super().__init__(adata)
        kwargs = self._module_kwargs_from_registry(likelihood, classifier=classifier)
        names, masks = program_masks_of(self.adata, self.adata_manager.registry["setup_args"])
        self._program_names = names
        n_members = {role: int(m.sum()) for role, m in masks.items()}
        if n_decoys is None:
            n_features = sum(int(m.shape[0]) for m in masks.values())
            n_decoys = _evidence.default_n_decoys(len(names), sum(n_members.values()), n_features)
        self.n_decoys = n_decoys
        masks = self._with_decoys(masks, kwargs["likelihoods"])
        self.module = self._module_cls(
            **kwargs,
            program_masks={role: torch.from_numpy(m) for role, m in masks.items()},
            n_decoys=self.n_decoys,
            n_denovo=n_denovo,
            mask_mode=mask_mode,
            soft_penalty=soft_penalty,
            group_lasso=group_lasso,
            nonnegative=nonnegative,
            activity_anchor=activity_anchor,
            anchor_target=anchor_target,
            anchor_hidden=anchor_hidden,
            anchor_modalities=anchor_modalities,
            feature_moments=self._feature_moments(kwargs["likelihoods"]),
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            modality_weights=modality_weights,
            encoder=encoder,
            **module_kwargs,
        )
        self._model_summary_string = (
            f"ProgramVI: {len(names)} programs ({n_members} memberships), {self.n_decoys} "
            f"hidden decoys, {n_denovo} de novo, "
            f"{mask_mode} mask, group_lasso {group_lasso}, modalities {kwargs['likelihoods']}, "
            f"n_batch {kwargs['n_batch']}"
        )
        # saved resolved (n_denovo too), so that loading rebuilds the same units
        n_decoys = self.n_decoys
        encoder = self.module.encoder_kind  # saved resolved: a later default cannot change it
        self.init_params_ = self._get_init_params(locals())

    def _feature_moments(self, likelihoods: dict[str, str]) -> dict[str, tuple]:
        """Mean and sd of every feature's log-normalised expression, per modality."""
        out = {}
        for role, key in self._modality_keys.items():
            X = self.adata_manager.get_from_registry(key)
            mean, sd = expression_moments(X, binary=likelihoods[role] == "bernoulli")
            out[role] = (torch.from_numpy(mean), torch.from_numpy(sd))
        return out

    def _with_decoys(
        self, masks: dict[str, np.ndarray], likelihoods: dict[str, str]
    ) -> dict[str, np.ndarray]:
        """Masks with the decoy programs appended after the annotated programs."""
        if not self.n_decoys:
            return masks
        means = {}
        for role, key in self._modality_keys.items():
            X = self.adata_manager.get_from_registry(key)
            binary = likelihoods[role] == "bernoulli"
            means[role] = np.asarray(_evidence.log_normalised(X, binary=binary).mean(0)).ravel()
        decoys = _evidence.decoy_masks(masks, means, self.n_decoys, seed=0)
        return {role: np.hstack([m, decoys[role]]) for role, m in masks.items()}

    # ------------------------------------------------------------------------- masks
    @property
    def program_names(self) -> list[str]:
        """Names of the annotated programs, in latent order."""
        return list(self._program_names)

    def _latent_names(self) -> list[str]:
        return self.program_names + [f"denovo_{i}" for i in range(self.module.n_denovo)]

    def get_latent_representation(self, *args, **kwargs):
        """Posterior mean (or samples, or distribution) of the programs and de novo units.

        Arguments of :meth:`scvi.model.base.VAEMixin.get_latent_representation`; the columns
        are the latent units in :meth:`get_program_activity`'s order (decoy programs hidden).

        Examples
        --------
        >>> z = model.get_latent_representation()
        """
        out = self._full_latent_representation(*args, **kwargs)
        cols = self.module.visible_units().cpu().numpy()
        if isinstance(out, tuple):
            return tuple(np.asarray(o)[..., cols] for o in out)
        return np.asarray(out)[..., cols]

    def _full_latent_representation(self, *args, **kwargs):
        """Latent representation of every unit, decoys included."""
        return super().get_latent_representation(*args, **kwargs)

    # ------------------------------------------------------------------------- data loading
    def _loader_keys(self, adata=None) -> list[str]:
        """Registry keys the data loader must load: everything but the varm program masks.

        A registered ``varm`` field has one row per feature, not per cell; left in the loader's
        default keys it would be sliced by cell index.
        """
        manager = self.get_anndata_manager(adata) if adata is not None else self.adata_manager
        manager = manager or self.adata_manager
        return [k for k in manager.data_registry if k not in PROGRAM_REGISTRY_KEYS]

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
        if "cell_arrays" not in datasplitter_kwargs:
            targets = self._anchor_targets(datasplitter_kwargs["data_and_attributes"])
            if targets is not None:
                datasplitter_kwargs["cell_arrays"] = {self.module.anchor_target_key: targets}
        return super().train(*args, datasplitter_kwargs=datasplitter_kwargs, **kwargs)

    def _anchor_targets(self, keys: list[str], batch_size: int = 256) -> np.ndarray | None:
        """The activity anchor's target in every cell, computed once before training.

        The target depends on the data only, so with many programs (a joint fit of ``k``
        programs costs ``k^2`` per cell, ~3.5 GFLOP per minibatch of 128 cells with the 5,233
        GO BP programs) it is computed once here rather than in every minibatch of every
        epoch, and the loader passes each minibatch its rows. ``None`` (targets computed per
        minibatch) without the anchor, with fewer than ``CACHED_TARGET_MIN_PROGRAMS`` programs,
        or where the targets would take more memory than the joint fit's inverse and
        ``CACHED_TARGET_MAX_BYTES``. Cells are read as the training loader reads them (the same
        dense or sparse minibatches), so every target is the one the minibatch would compute.
        """
        module = self.module
        n_programs, n_obs = module.n_programs, self.adata.n_obs
        n_fit = n_programs - module.n_decoys + 1
        if (
            module.activity_anchor <= 0
            or module.n_frozen >= n_programs
            or n_programs < CACHED_TARGET_MIN_PROGRAMS
            or n_obs * n_programs > max(n_fit**2, CACHED_TARGET_MAX_BYTES // 4)
        ):
            return None
        dataset = MinibatchDataset(
            self.adata_manager, keys=keys, sparse_keys=module.sparse_input_keys()
        )
        device = module.group_weights.device
        with torch.inference_mode():
            # the fit first (on one cell), with as little else as possible in memory
            module.anchor_score(*module.anchor_inputs(_to(dataset[np.arange(1)], device)))
            targets = np.empty((n_obs, n_programs), dtype=np.float32)
            for start in range(0, n_obs, batch_size):
                rows = np.arange(start, min(start + batch_size, n_obs))
                score = module.anchor_score(*module.anchor_inputs(_to(dataset[rows], device)))
                targets[rows] = score.cpu().numpy()
        # the fit's (k + 1) x (k + 1) inverse is no longer needed while training
        module.release_anchor_fit()
        return targets

    # ------------------------------------------------------------------------- outputs
    @torch.inference_mode()
    def get_program_activity(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Activity of every program in every cell: the posterior mean of its latent unit.

        With ``activity_anchor > 0`` (the default) each program's activity rises with the
        expression of its members: it is trained to correlate with their mean standardised
        log-normalised expression, denoised by the model (see :doc:`/programs`).

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
        """Module latent index of a program or de novo unit given by name or position."""
        names = self._latent_names()
        visible = self.module.visible_units().cpu().numpy()
        if isinstance(program, int | np.integer):
            if not 0 <= program < len(names):
                raise IndexError(f"program index {program} out of range (0..{len(names) - 1}).")
            return int(visible[program])
        if program not in names:
            close = [n for n in names if str(program).lower() in n.lower()][:5]
            hint = f"; did you mean one of {close}?" if close else ""
            raise KeyError(f"program {program!r} is not a latent unit of this model{hint}")
        return int(visible[names.index(program)])

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
        norms = self.module.program_norms()[self.module.visible_units()].cpu().numpy()
        out = pd.Series(norms > tol, index=self._latent_names(), name="active")
        out.attrs["norm"] = pd.Series(norms, index=out.index, name="norm")
        return out

    def _intrinsic_extras(self, adata=None, batch_size: int | None = None) -> dict:
        active = self.active_programs()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="this model has no decoy programs")
            evidence = self.program_evidence(adata, batch_size=batch_size)
        evidence.attrs = {}  # h5ad stores the frame, not its attrs
        return {
            "programs": np.asarray(self.program_names, dtype=object),
            "params": {
                "n_latent": len(self._latent_names()),
                "n_programs": len(self._program_names),
                "n_decoys": int(self.n_decoys),
                "n_denovo": int(self.module.n_denovo),
                "mask_mode": self.module.mask_mode,
                "group_lasso": float(self.module.group_lasso),
                "soft_penalty": float(self.module.soft_penalty),
                "activity_anchor": float(self.module.activity_anchor),
                "anchor_target": str(getattr(self.module, "anchor_target", "mean")),
                "nonnegative": bool(self.module.nonnegative),
            },
            "active": active.to_numpy(),
            "weight_norm": active.attrs["norm"].to_numpy(),
            _keys.EVIDENCE: evidence,
        }

    # ------------------------------------------------------------------------- setup
    @classmethod
    @setup_docs
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
        %(adata)s
        %(layer)s
        %(batch_key)s
        %(labels_key)s
        %(covariate_keys)s
        %(size_factor_key)s
        %(modality)s
        program_key
            Key of the boolean features x programs mask in ``adata.varm``, as written by
            :func:`glassvi.pp.add_programs`: an array with the program names in
            ``adata.uns[program_key]["names"]``, or a DataFrame whose columns are the names
            (a "/" in them makes setup warn: h5ad cannot write such column names).
        %(unlabeled_category)s

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
        if not isinstance(program_key, str):
            raise TypeError(f"program_key must be a string, got {type(program_key).__name__}.")

        def mask_field() -> list:
            check_masks({modality: read_mask(adata, program_key, "adata")})
            check_mask_names(adata, program_key, "adata")
            return [ProgramMaskField(program_registry_key(modality), program_key)]

        cls._setup_anndata_from(adata, setup_method_args, mask_field, **kwargs)

    @classmethod
    @setup_docs
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
        %(mdata)s
        %(rna_layer)s
        %(atac_layer)s
        %(mudata_batch_key)s
        %(mudata_labels_key)s
        %(mudata_covariate_keys)s
        %(mudata_size_factor_key)s
        program_key
            ``varm`` key of the masks in every modality, or a dict role -> key, e.g.
            ``{"rna": "programs", "atac": "peak_programs"}``.
        %(modalities)s
        %(unlabeled_category)s

        Examples
        --------
        >>> glassvi.pp.add_programs(mdata["rna"], "hallmark.gmt")
        >>> glassvi.pp.add_peak_programs(mdata, links=glassvi.pp.link_peaks(mdata["atac"], genes))
        >>> glassvi.model.ProgramVI.setup_mudata(mdata, batch_key="batch")
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if not isinstance(program_key, str | dict):
            raise TypeError(
                f"program_key must be a string or a dict, got {type(program_key).__name__}."
            )

        def mask_fields(resolved: dict) -> list:
            masks = {}
            for role in ROLES:
                mod = resolved.get(f"{role}_layer")
                if mod is not None:
                    key = program_key_for(program_key, role)
                    masks[role] = read_mask(mdata[mod], key, f"mdata[{mod!r}]")
                    check_mask_names(mdata[mod], key, f"mdata[{mod!r}]")
            check_masks(masks)
            return [
                MuDataProgramMaskField(
                    program_registry_key(role),
                    program_key_for(program_key, role),
                    mod_key=resolved[f"{role}_layer"],
                    mod_required=True,
                )
                for role in masks
            ]

        cls._setup_mudata_from(mdata, setup_method_args, mask_fields, **kwargs)

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
            Query data with the reference's features, matched by name (in another order the
            model uses a reordered copy; missing features are refused). If it has no program
            mask under the reference's ``program_key``, the reference model's mask is copied
            into it (when ``reference_model`` is a model object); a different mask is an error.
        reference_model
            A trained ProgramVI or the directory it was saved to (read without running code,
            see :meth:`load`; pass ``trusted=True`` for files you trust).
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
        if n_denovo_query < 0:
            raise ValueError(f"n_denovo_query must be >= 0, got {n_denovo_query}.")
        if reference_model is None:
            raise ValueError("reference_model is required.")
        reference_model = read_saved_model(reference_model, trusted=kwargs.pop("trusted", False))
        adata = cls._align_query(adata, reference_model)
        attr_dict, ref_state = reference_state(reference_model)
        setup_args = attr_dict["registry_"]["setup_args"]
        if adata is not None:
            reference = reference_model if isinstance(reference_model, ProgramVI) else None
            params = attr_dict.get("init_params_", {}).get("non_kwargs", {})
            prepare_query_masks(
                adata, reference, setup_args, ref_state, params.get("n_decoys") or 0
            )
        model = super().load_query_data(adata, reference_model, **kwargs)
        if kwargs.get("unfrozen", False):
            return model
        model.module.n_frozen = model.module.n_latent
        if n_denovo_query:
            model.module.add_denovo_(n_denovo_query)
            model.init_params_["non_kwargs"]["n_denovo"] = model.module.n_denovo
            logger.info("added %d de novo units trained on the query", n_denovo_query)
        return model


def _to(batch: dict, device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}
