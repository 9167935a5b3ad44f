"""Every AnnData/MuData key glassvi writes, built in one place.

Results of a model are written under a *prefix* (``key_added``, by default the model's name,
``"linearvi"`` or ``"programvi"``):

- ``latent(prefix)``: ``"X_{prefix}"``, the posterior-mean latent representation (``.obsm``);
- ``weights(prefix, suffix)``: ``"{prefix}_{suffix}"``, decoder weights (``.varm``);
- ``prefix`` itself: what ``explain(method="weights")`` recorded (``.uns``);
- ``attribution(prefix, method, target)``: ``"{prefix}_{method}_{target}"``, one attribution
  run (``.varm``, ``.obsm``, ``.uns``);
- ``absolute(key)``: ``"{key}_abs"``, its mean absolute companion;
- ``by_group(key, groupby)``: ``"{key}_by_{groupby}"``, its per-group means;
- ``differential(prefix)``: ``"{prefix}_differential"``, differential programs (``.uns``);
- ``EVIDENCE``: the field of ``.uns[prefix]`` holding ProgramVI's evidence for every program;
- ``rank_features(direction, absolute)``: ``"rank_features"`` (``"rank_features_against"``,
  ``"rank_features_abs"``), feature rankings in scanpy's layout (``.uns``).

Use it as ``from .. import _keys`` and ``_keys.attribution(prefix, method, target)``; a new kind
of key gets a function here.
"""

from __future__ import annotations

from collections.abc import Sequence

#: prefix of the ``.obsm`` keys of embeddings and latent representations
LATENT_PREFIX = "X_"
#: suffix of the mean absolute companion of an attribution entry
ABS_SUFFIX = "_abs"
#: separator of group and target in the column names of per-group ``.varm`` entries
GROUP_SEP = "|"
#: default prefix (``key_added``) and decoder-weights suffix of each model class
LINEARVI, LINEARVI_WEIGHTS = "linearvi", "loadings"
PROGRAMVI, PROGRAMVI_WEIGHTS = "programvi", "weights"
#: field of ``.uns[prefix]`` holding ProgramVI's evidence table (``program_evidence``)
EVIDENCE = "evidence"


def latent(prefix: str) -> str:
    """``.obsm`` key of the latent representation: ``"X_{prefix}"``."""
    return f"{LATENT_PREFIX}{prefix}"


def latent_name(key: str) -> str:
    """The name of a latent or embedding key: ``"X_umap"`` -> ``"umap"``."""
    return key.removeprefix(LATENT_PREFIX)


def has_prefix(key: str, prefix: str) -> bool:
    """Whether ``key`` was written under ``prefix`` (``"{prefix}_..."``)."""
    return key.startswith(f"{prefix}_")


def weights(prefix: str, suffix: str) -> str:
    """``.varm`` key of the decoder weights: ``"{prefix}_{suffix}"``."""
    return f"{prefix}_{suffix}"


def attribution(prefix: str, method: str, target: str) -> str:
    """Key of one attribution run: ``"{prefix}_{method}_{target}"``."""
    return f"{prefix}_{method}_{target}"


def absolute(key: str) -> str:
    """Key of the mean absolute companion of ``key``: ``"{key}_abs"``."""
    return f"{key}{ABS_SUFFIX}"


def is_absolute(key: str) -> bool:
    """Whether ``key`` names a mean absolute entry."""
    return key.endswith(ABS_SUFFIX)


def signed(key: str) -> str:
    """The signed entry of a mean absolute key (``key`` itself when it is signed)."""
    return key.removesuffix(ABS_SUFFIX)


def by_group(key: str, groupby: str) -> str:
    """Key of the per-group means of ``key``: ``"{key}_by_{groupby}"``."""
    return f"{key}_by_{groupby}"


def differential(prefix: str) -> str:
    """``.uns`` key of a differential-programs result: ``"{prefix}_differential"``."""
    return f"{prefix}_differential"


def rank_features(direction: str = "for", absolute: bool = False) -> str:
    """Default ``.uns`` key of a feature ranking (``glassvi.tl.rank_features``).

    ``"rank_features"`` (signed evidence for each group), ``"rank_features_against"`` or
    ``"rank_features_abs"`` (ranked by absolute value).
    """
    if absolute:
        return "rank_features_abs"
    return "rank_features" if direction == "for" else "rank_features_against"


def group_columns(groups: Sequence[str], targets: Sequence[str]) -> list[str]:
    """Column names ``"<group>|<target>"`` of a per-group ``.varm`` entry, group-major."""
    return [f"{g}{GROUP_SEP}{t}" for g in groups for t in targets]


#: ``.obsm`` keys of the latent representations of the model classes, under their default prefix
DEFAULT_LATENTS = (latent(PROGRAMVI), latent(LINEARVI))
#: ``.varm`` keys of the decoder weights of the model classes, under their default prefix
DEFAULT_WEIGHTS = (weights(PROGRAMVI, PROGRAMVI_WEIGHTS), weights(LINEARVI, LINEARVI_WEIGHTS))
