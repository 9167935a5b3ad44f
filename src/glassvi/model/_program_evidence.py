"""ProgramVI's evidence for every program, from the decoy programs trained alongside."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from . import _evidence as ev

logger = logging.getLogger(__name__)

#: columns of the evidence table, in order
EVIDENCE_COLUMNS = (
    "coherence",
    "score",
    "pvalue",
    "fdr",
    "significant",
    "effective_genes",
    "n_genes",
    "explained",
    "activity_sd",
    "top_gene",
    "top_gene_share",
)


class ProgramEvidenceMixin:
    """``program_evidence`` for ProgramVI (decoy programs are the last annotated units)."""

    n_decoys: int

    @torch.inference_mode()
    def _all_units_latent(self, adata, batch_size: int | None = None) -> np.ndarray:
        """Posterior means of every latent unit, decoys included."""
        return np.asarray(self._full_latent_representation(adata, batch_size=batch_size))

    def _evidence_arrays(self, adata, batch_size: int | None):
        """Entries (feature, unit) of every annotated or weighted feature, with their values."""
        activity = self._all_units_latent(adata, batch_size)
        manager = self.get_anndata_manager(adata, required=True)
        n_prog = self.module.n_programs  # annotated programs and decoys
        rows_all, cols_all, in_mask_all, weight_all, names_all = [], [], [], [], []
        offset = 0
        expr_blocks, info_blocks = [], []
        for role, key in self._modality_keys.items():
            counts = sparse.csr_matrix(manager.get_from_registry(key), dtype=np.float64)
            lik = self.module.likelihoods[role]
            expr_blocks.append(ev.log_normalised(counts, binary=lik == "bernoulli"))
            info_blocks.append(ev.feature_information(counts, lik))
            dec = self.module.decoders[role]
            mask = dec.mask.detach().cpu().numpy()
            weights = dec.program_weights().detach().cpu().numpy()
            rows, cols = np.nonzero(mask | (weights != 0))
            rows_all.append(rows + offset)
            cols_all.append(cols)
            in_mask_all.append(mask[rows, cols])
            weight_all.append(weights[rows, cols])
            names_all.append(np.asarray(self._var_names(role, adata), dtype=object))
            offset += counts.shape[1]
        expression = sparse.hstack(expr_blocks, format="csr")
        information = sparse.hstack(info_blocks, format="csr")
        rows = np.concatenate(rows_all)
        cols = np.concatenate(cols_all)
        corr, signal = ev.member_statistics(
            expression, information, activity[:, :n_prog], rows, cols, np.concatenate(weight_all)
        )
        summary = ev.program_summaries(n_prog, cols, np.concatenate(in_mask_all), corr, signal)
        summary["activity_sd"] = activity[:, :n_prog].std(0)
        feature_names = np.concatenate(names_all)
        top = summary["top_entry"]
        summary["top_feature"] = np.where(top >= 0, feature_names[rows[np.maximum(top, 0)]], "")
        return summary

    def program_evidence(
        self,
        adata=None,
        fdr: float = 0.1,
        *,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Evidence that the data use each program, with p-values from decoy programs.

        A program is *used* by the data when its members follow its activity together. The
        statistic, ``coherence``, is the mean correlation (over cells) of the members'
        log-normalised expression with the program's activity, leaving out the member that
        correlates best, so that one gene cannot make a program coherent. Its null
        distribution comes from the data: the model trains ``n_decoys`` hidden decoy programs,
        random feature sets that match the annotated programs in size and expression, alongside
        the real ones. A program the data do not use is, to the model, one more random feature
        set, so its coherence is exchangeable with the decoys' of the same size. Because a unit
        fitted to a few unrelated features still correlates with them, more so the fewer they
        are, coherence is standardised for size (``score``: location and spread fitted on the
        decoys as linear functions of ``1 / sqrt(n_genes)``, see
        ``glassvi.model._evidence.size_adjusted_scores``). The p-value is the rank of a program's
        score among the decoys', ``(1 + #{decoys >= score}) / (1 + n_decoys)``, and ``fdr``
        holds Benjamini-Hochberg q-values over the annotated programs.

        ``effective_genes`` counts how many features carry a program: ``exp`` of the entropy of
        the features' shares of the program's explained signal, where feature ``g``'s signal
        is its decoder weight times the spread of the activity over cells times the feature's
        scale, ``|w_g| sqrt(mean_c x_cg (z_c - mean z)^2)`` with ``x_cg`` the counts (its square
        is the Poisson approximation of the gain in log-likelihood from the program varying,
        feature by feature; for accessibility, ``x_cg`` is replaced by ``p_g (1 - p_g)``). A
        program carried by one gene has ``effective_genes`` close to 1, whatever its size.

        Parameters
        ----------
        adata
            Data set up like the training data; defaults to the training data.
        fdr
            False discovery rate of the ``significant`` column.
        batch_size
            Minibatch size of the encoder.

        Returns
        -------
        DataFrame indexed by program name (annotated programs only, no de novo units, no
        decoys), sorted by p-value and then by decreasing score, with columns

        ``coherence``
            Mean member correlation with the activity, leaving out the best member (between -1
            and 1).
        ``score``
            The test statistic: coherence standardised for size against the decoys (like a
            z-score; the decoys' scores are centred on 0 with spread 1 at every size).
        ``pvalue``, ``fdr``, ``significant``
            Empirical p-value against the decoys, Benjamini-Hochberg q-value, and ``fdr <=
            fdr``.
        ``effective_genes``, ``n_genes``
            Effective number of features carrying the program, and its number of members.
        ``explained``
            Root of the summed squared signal of its features: how much the program explains
            (zero for a program the model switched off).
        ``activity_sd``
            Standard deviation of the activity over cells.
        ``top_gene``, ``top_gene_share``
            The feature with the largest share of the explained signal, and that share.

        The ``attrs`` of the frame record ``fdr_level``, ``n_decoys`` and the decoys'
        ``decoy_coherence`` and ``decoy_score``. Without decoys (``n_decoys=0``), ``pvalue`` and
        ``fdr`` are NaN and nothing is significant.

        Examples
        --------
        >>> evidence = model.program_evidence(fdr=0.1)
        >>> evidence[evidence.significant & (evidence.effective_genes >= 3)].head()
        """
        if not 0 < fdr < 1:
            raise ValueError(f"fdr must be in (0, 1), got {fdr}.")
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        summary = self._evidence_arrays(adata, batch_size)
        n_real = len(self.program_names)
        real = slice(0, n_real)
        decoys = slice(n_real, n_real + self.n_decoys)
        coherence = summary["coherence"]
        is_decoy = np.zeros(len(coherence), dtype=bool)
        is_decoy[decoys] = True
        if self.n_decoys > 0:
            stat = ev.size_adjusted_scores(coherence, summary["n_members"], is_decoy)
        else:
            stat = ev.decoy_score(coherence, coherence[decoys])
        null = stat[decoys]
        if self.n_decoys > 0:
            pvalue = ev.empirical_pvalues(stat[real], null)
            qvalue = ev.benjamini_hochberg(pvalue)
        else:
            warnings.warn(
                "this model has no decoy programs (n_decoys=0), so program_evidence has no "
                "null distribution: pvalue and fdr are NaN. Train with n_decoys > 0 (the "
                "default) for p-values.",
                UserWarning,
                stacklevel=2,
            )
            pvalue = qvalue = np.full(n_real, np.nan)
        table = pd.DataFrame(
            {
                "coherence": coherence[real],
                "score": stat[real],
                "pvalue": pvalue,
                "fdr": qvalue,
                "significant": np.asarray(qvalue <= fdr, dtype=bool),
                "effective_genes": summary["effective"][real],
                "n_genes": summary["n_members"][real].astype(np.int64),
                "explained": summary["explained"][real],
                "activity_sd": summary["activity_sd"][real],
                "top_gene": summary["top_feature"][real].astype(str),
                "top_gene_share": summary["top_share"][real],
            },
            index=pd.Index(self.program_names, name="program"),
        )
        table = table.sort_values(
            ["pvalue", "score"], ascending=[True, False], kind="stable", na_position="last"
        )
        table.attrs["fdr_level"] = float(fdr)
        table.attrs["n_decoys"] = int(self.n_decoys)
        table.attrs["decoy_coherence"] = coherence[decoys].tolist()
        table.attrs["decoy_score"] = null.tolist()
        return table
