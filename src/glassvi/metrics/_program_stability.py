"""Seed stability of program activities: agreement of the same programs across runs."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from itertools import combinations
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ._utils import pearson_columns, to_array

logger = logging.getLogger(__name__)

#: names ProgramVI gives its de novo units (``denovo_0``, ``denovo_1``, ...)
DENOVO_NAME = re.compile(r"denovo_\d+")


def program_stability(
    activities: Sequence[Any],
    method: Literal["pearson", "spearman"] = "pearson",
    *,
    include_denovo: bool = False,
) -> pd.DataFrame:
    """Agreement of each program's activity across runs (e.g. training seeds).

    Every pair of runs is compared program by program: the activity of a program in one run is
    correlated, over cells, with the activity of the same program in the other. Programs are
    matched by name when the runs are DataFrames (only the programs present in every run are
    compared) and by column position otherwise; cells are matched by index. A stable program
    has a high correlation in every pair; a program whose sign flips between runs has a
    negative one.

    De novo units (columns named ``denovo_0``, ``denovo_1``, ... as in
    :meth:`~glassvi.model.ProgramVI.get_program_activity`) have no gene set that ties them
    to one meaning: ``denovo_0`` of one seed need not be ``denovo_0`` of another. They are
    left out by default (with a log message), so that the agreement is over annotated
    programs only.

    Parameters
    ----------
    activities
        Two or more cells x programs activities of the same cells, e.g.
        ``model.get_program_activity()`` of models trained with different seeds.
    method
        ``"pearson"`` or ``"spearman"`` (Pearson correlation of ranks).
    include_denovo
        Compare the de novo units by name as well (only DataFrames have names; arrays are
        compared column by column in any case).

    Returns
    -------
    pandas.DataFrame
        Indexed by program, with columns ``correlation`` (mean over pairs of runs),
        ``min_correlation`` (worst pair) and ``sign_agreement`` (fraction of pairs with a
        positive correlation; 1 when the program never flips). Correlations are NaN for a
        program that is constant in a run; such pairs do not count as agreeing.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from glassvi.metrics import program_stability
    >>> rng = np.random.default_rng(0)
    >>> a = pd.DataFrame(rng.normal(size=(50, 2)), columns=["P1", "P2"])
    >>> b = a.assign(P2=-a["P2"])  # P2 flipped sign in the second run
    >>> program_stability([a, b])["sign_agreement"].tolist()
    [1.0, 0.0]
    >>> c, d = a.assign(denovo_0=a["P1"]), b.assign(denovo_0=-a["P1"])
    >>> program_stability([c, d]).index.tolist()  # de novo units left out
    ['P1', 'P2']
    >>> program_stability([c, d], include_denovo=True).index.tolist()
    ['P1', 'P2', 'denovo_0']
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    runs = list(activities)
    if len(runs) < 2:
        raise ValueError(f"program_stability needs at least two runs, got {len(runs)}")
    if all(isinstance(r, pd.DataFrame) for r in runs):
        names = pd.Index(runs[0].columns)
        for r in runs[1:]:
            names = names.intersection(pd.Index(r.columns), sort=False)
        if len(names) == 0:
            raise ValueError("the runs share no program name")
        if not include_denovo:
            denovo = [n for n in names if DENOVO_NAME.fullmatch(str(n))]
            if denovo:
                names = names.drop(denovo)
                logger.info(
                    "program_stability: left out %d de novo units (%s), which are not the "
                    "same unit across runs; include_denovo=True compares them",
                    len(denovo),
                    ", ".join(map(str, denovo)),
                )
            if len(names) == 0:
                raise ValueError(
                    "the runs share only de novo units; pass include_denovo=True to compare them"
                )
        index = runs[0].index
        for i, r in enumerate(runs[1:], start=1):
            if not r.index.sort_values().equals(index.sort_values()):
                raise ValueError(f"run {i} has different cells (index) than run 0")
        arrays = [to_array(r.loc[index, names], f"activities[{i}]") for i, r in enumerate(runs)]
    else:
        arrays = [to_array(r, f"activities[{i}]", ndim=2) for i, r in enumerate(runs)]
        shape = arrays[0].shape
        for i, arr in enumerate(arrays[1:], start=1):
            if arr.shape != shape:
                raise ValueError(
                    f"activities[{i}] has shape {arr.shape} but activities[0] has {shape}"
                )
        names = pd.RangeIndex(shape[1])
    if method == "spearman":
        arrays = [rankdata(a, axis=0) for a in arrays]
    pairs = np.array([pearson_columns(a, b) for a, b in combinations(arrays, 2)])
    with np.errstate(invalid="ignore"):
        all_nan = np.isnan(pairs).all(axis=0)
        safe = np.where(np.isnan(pairs), 0.0, pairs)
        counts = (~np.isnan(pairs)).sum(axis=0)
        mean = np.where(all_nan, np.nan, safe.sum(axis=0) / np.maximum(counts, 1))
        worst = np.where(all_nan, np.nan, np.where(np.isnan(pairs), np.inf, pairs).min(axis=0))
    agree = (np.nan_to_num(pairs, nan=-1.0) > 0).mean(axis=0)
    return pd.DataFrame(
        {"correlation": mean, "min_correlation": worst, "sign_agreement": agree},
        index=pd.Index(names, name="program"),
    )
