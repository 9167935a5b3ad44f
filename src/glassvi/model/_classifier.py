"""Cell-label head of glassvi models: label names, predictions and the head's weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS

#: label used for unlabelled cells when ``setup_anndata`` is not told otherwise
DEFAULT_UNLABELED_CATEGORY = "Unknown"


class ClassifierMixin:
    """Predictions of the linear cell-label head trained on the latent posterior mean.

    Mixed into :class:`~glassvi.model.base.GlassModelBase`; it needs the model's
    ``adata_manager`` and a module with a ``classifier`` attribute (``None`` when no head).
    """

    @property
    def has_classifier(self) -> bool:
        """Whether the model has a cell-label head."""
        return getattr(self.module, "classifier", None) is not None

    def _labels_state(self) -> dict:
        return self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)

    def _label_names(self) -> list[str]:
        """Names of the label classes in head order (the unlabelled category excluded)."""
        state = self._labels_state()
        mapping = list(state.get("categorical_mapping", []))
        if "unlabeled_category" not in state:
            # labels registered without an unlabelled category (no labels_key): no classes
            return []
        return [str(c) for c in mapping if c != state["unlabeled_category"]]

    def _check_classifier(self) -> None:
        if not self.has_classifier:
            raise ValueError(
                f"This {type(self).__name__} has no cell-label head: register a labels_key with "
                "at least two labels in setup_anndata/setup_mudata and build the model with "
                "classifier=True (the default when labels are registered)."
            )

    def get_classifier_weights(self) -> pd.DataFrame:
        """Weights of the linear cell-label head: classes x latent units.

        The logit of class ``c`` for a cell with posterior mean ``z`` is
        ``sum_k z_k * W[c, k] + b[c]``; the bias is in ``.attrs["bias"]``.

        Returns
        -------
        DataFrame indexed by class name, with one column per latent unit (factor or program).

        Examples
        --------
        >>> w = model.get_classifier_weights()
        >>> w.loc["B cells"].sort_values().tail(3)  # factors that raise the B-cell logit most
        """
        self._check_classifier()
        head = self.module.classifier
        frame = pd.DataFrame(
            head.weight.detach().cpu().numpy(),
            index=self._label_names(),
            columns=self._latent_names(),
        )
        frame.attrs["bias"] = head.bias.detach().cpu().numpy()
        return frame

    @torch.inference_mode()
    def predict(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
    ) -> pd.Series | pd.DataFrame:
        """Predict cell labels with the classification head (from the posterior mean).

        Parameters
        ----------
        adata
            AnnData/MuData set up like the training data; defaults to the training data.
        indices
            Positions of the cells to predict; all cells by default.
        soft
            Return class probabilities instead of labels.
        batch_size
            Minibatch size.

        Returns
        -------
        ``soft=False``: categorical Series of predicted labels indexed by ``obs_names``.
        ``soft=True``: DataFrame cells x classes of probabilities (rows sum to 1).

        Examples
        --------
        >>> glassvi.model.LinearVI.setup_anndata(adata, labels_key="cell_type")
        >>> model = glassvi.model.LinearVI(adata)
        >>> model.train(max_epochs=50)
        >>> adata.obs["predicted"] = model.predict()
        >>> model.predict(soft=True).head()
        """
        self._check_classifier()
        adata = self._validate_anndata(adata)
        indices = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        was_training = self.module.training
        self.module.eval()
        probs = []
        try:
            for tensors in loader:
                inputs = self.module._get_inference_input(tensors)
                device = self.module.library_log_means.device
                moved = {
                    "x": {k: v.to(device) for k, v in inputs["x"].items()},
                    **{
                        k: (v.to(device) if v is not None else None)
                        for k, v in inputs.items()
                        if k != "x"
                    },
                }
                logits = self.module.classify(**moved)
                probs.append(torch.softmax(logits, dim=-1).cpu().numpy())
        finally:
            self.module.train(was_training)
        probs = np.concatenate(probs, axis=0)
        names = self._label_names()
        obs_names = adata.obs_names[indices]
        if soft:
            return pd.DataFrame(probs, index=obs_names, columns=names)
        labels = np.asarray(names, dtype=object)[probs.argmax(axis=1)]
        return pd.Series(
            pd.Categorical(labels, categories=names), index=obs_names, name="predicted_label"
        )
