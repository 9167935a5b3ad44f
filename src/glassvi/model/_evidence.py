"""Evidence for gene programs: decoy programs, coherence, empirical p-values, effective genes.

The numbers here take arrays and return arrays; :meth:`glassvi.model.ProgramVI.program_evidence`
reads them from a trained model and its data.

The null comes from the data. A trained ProgramVI holds, besides the annotated programs, a few
*decoy* programs: random feature sets drawn to match the size and the expression of the
annotated ones, trained alongside them and hidden from every output. A program the data do not
use is, for the model, a feature set like any decoy, so the decoys' statistics are draws from the
statistic's null distribution; each program's p-value is its rank among them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import sparse

#: expression bins used to match decoy members to program members
N_EXPRESSION_BINS = 25
#: the default number of decoy programs: DECOYS_PER_PROGRAM per program within
#: [MIN_DECOYS, MAX_SMALL_DECOYS], or one per program up to MAX_DECOYS
DECOYS_PER_PROGRAM, MIN_DECOYS, MAX_SMALL_DECOYS, MAX_DECOYS = 10, 100, 300, 1000
#: at most this many decoy memberships per feature (on average), and never fewer decoys than
#: FEWEST_DECOYS when that cap applies
DECOYS_PER_FEATURE, FEWEST_DECOYS = 5.5, 20


def default_n_decoys(
    n_programs: int, n_memberships: int | None = None, n_features: int | None = None
) -> int:
    """Number of decoy programs trained by default.

    Ten per program, at least 100 and at most 300, or one per program when there are more
    than 300 programs, up to 1000. The smallest p-value is ``1 / (n_decoys + 1)``; with 300
    decoys a program that beats every decoy passes a Benjamini-Hochberg FDR of 0.1 among up to
    ~30 x as many programs as there are supported ones. Fewer decoys also make the p-values of
    one model vary together: on the simulator (45 programs: planted ones with noisy masks,
    silent and random gene sets; 6 seeds) 100 decoys called up to 20% of the unused programs in
    a seed at FDR 0.1, 300 at most 7%. Few programs get fewer decoys, so that the decoys do not
    outnumber them by more than ten to one (they cost training time).

    Given the programs' total number of memberships and the number of features, the decoys are
    also capped so that a feature belongs on average to at most ``DECOYS_PER_FEATURE`` (5.5)
    decoys, but no fewer than ``FEWEST_DECOYS`` (20) decoys are kept. Decoys take part of the
    signal of the features they hold: where large programs fill a small feature space (the
    simulator's 12 programs of 25 genes in 300 genes), ten decoys per feature (120) lowered the
    activities' correlation with the truth from 0.93 (no decoys) to 0.905-0.912 over 3 seeds,
    the 64 decoys of the cap to 0.914-0.923, 35 to 0.923-0.928. The cap leaves gene-set
    collections over real transcriptomes alone (Hallmark and marker sets over 765-2,000
    variable genes: at most 5.2 decoys per gene with 300 decoys).

    Examples
    --------
    >>> [default_n_decoys(n) for n in (5, 20, 60, 500, 5000)]
    [100, 200, 300, 500, 1000]
    >>> default_n_decoys(12, n_memberships=300, n_features=300)  # 25 genes per program
    66
    """
    base = min(MAX_SMALL_DECOYS, max(MIN_DECOYS, DECOYS_PER_PROGRAM * n_programs))
    n = int(min(max(base, n_programs), MAX_DECOYS))
    if n_memberships and n_features and n_programs:
        mean_size = n_memberships / n_programs
        cap = int(DECOYS_PER_FEATURE * n_features / mean_size)
        n = min(n, max(cap, FEWEST_DECOYS))
    return n


def expression_bins(mean: np.ndarray, n_bins: int = N_EXPRESSION_BINS) -> np.ndarray:
    """Bin of every feature by the rank of its mean expression (equal-sized bins)."""
    mean = np.asarray(mean, dtype=np.float64)
    rank = np.argsort(np.argsort(mean, kind="stable"), kind="stable")
    n_bins = max(1, min(n_bins, len(mean)))
    return (rank * n_bins // max(len(mean), 1)).astype(np.int64)


def decoy_masks(
    masks: Mapping[str, np.ndarray],
    feature_means: Mapping[str, np.ndarray],
    n_decoys: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random decoy programs matched to the annotated programs in size and expression.

    Each decoy copies a *template* program, chosen by cycling through the annotated programs in
    a random order (so the decoys' sizes follow the programs' sizes). In every modality, each
    member of the template is replaced by a feature drawn at random from the same expression
    bin (features ranked by mean expression, :data:`N_EXPRESSION_BINS` equal bins), without
    repeats within a decoy. A decoy therefore has exactly as many members as its template in
    every modality.

    Parameters
    ----------
    masks
        Modality -> boolean ``(n_features, n_programs)`` mask; same programs in every modality.
    feature_means
        Modality -> mean (normalised) expression of every feature.
    n_decoys
        Number of decoys.
    seed
        Seed of the random draws; the result depends only on the inputs and the seed.

    Returns
    -------
    Modality -> boolean ``(n_features, n_decoys)`` decoy mask.

    Examples
    --------
    >>> mask = np.zeros((50, 2), dtype=bool); mask[:5, 0] = mask[10:20, 1] = True
    >>> decoys = decoy_masks({"rna": mask}, {"rna": np.arange(50.0)}, 4)
    >>> sorted(decoys["rna"].sum(0).tolist())  # sizes of the templates
    [5, 5, 10, 10]
    """
    roles = list(masks)
    out = {r: np.zeros((masks[r].shape[0], n_decoys), dtype=bool) for r in roles}
    if n_decoys <= 0:
        return out
    rng = np.random.default_rng(seed)
    sizes = sum(np.asarray(masks[r]).sum(0) for r in roles)
    candidates = np.flatnonzero(sizes > 0)
    if len(candidates) == 0:
        return out
    n_rounds = -(-n_decoys // len(candidates))
    templates = np.concatenate([rng.permutation(candidates) for _ in range(n_rounds)])[:n_decoys]
    for role in roles:
        mask = np.asarray(masks[role], dtype=bool)
        bins = expression_bins(feature_means[role])
        pools = [np.flatnonzero(bins == b) for b in range(int(bins.max()) + 1)]
        for j, t in enumerate(templates):
            members = np.flatnonzero(mask[:, t])
            if len(members) == 0:
                continue
            # how many members to draw from each bin; neighbouring bins fill in when one is
            # smaller than the template needs
            need = np.bincount(bins[members], minlength=len(pools))
            chosen: list[np.ndarray] = []
            taken = np.zeros(mask.shape[0], dtype=bool)
            for b in np.flatnonzero(need):
                left = int(need[b])
                for offset in range(len(pools)):
                    for bb in {b - offset, b + offset}:
                        if left == 0 or not 0 <= bb < len(pools):
                            continue
                        pool = pools[bb][~taken[pools[bb]]]
                        pick = rng.permutation(pool)[:left]
                        taken[pick] = True
                        chosen.append(pick)
                        left -= len(pick)
                    if left == 0:
                        break
            out[role][np.concatenate(chosen), j] = True
    return out


def log_normalised(counts, binary: bool = False) -> sparse.csr_matrix:
    """``log1p`` of counts scaled to 10,000 per cell (or the binarised counts), as CSR."""
    X = sparse.csr_matrix(counts, dtype=np.float64, copy=True)
    if binary:
        X.data = (X.data > 0).astype(np.float64)
        return X
    lib = np.asarray(X.sum(1)).ravel()
    scale = np.divide(1e4, lib, out=np.zeros_like(lib), where=lib > 0)
    X = sparse.csr_matrix(sparse.diags(scale) @ X)
    np.log1p(X.data, out=X.data)
    return X


def member_correlations(expression: sparse.csr_matrix, activity: np.ndarray) -> np.ndarray:
    """Pearson correlation of every feature with every activity: ``(n_features, n_units)``.

    Parameters
    ----------
    expression
        Cells x features (e.g. :func:`log_normalised`).
    activity
        Cells x units.

    Examples
    --------
    >>> X = sparse.csr_matrix(np.array([[0.0, 1], [1, 0], [2, 1]]))
    >>> member_correlations(X, np.array([[0.0], [1], [2]])).round(2)
    array([[1.],
           [0.]])
    """
    n = expression.shape[0]
    mean = np.asarray(expression.mean(0)).ravel()
    sq = np.asarray(expression.multiply(expression).mean(0)).ravel()
    sd = np.sqrt(np.maximum(sq - mean**2, 0.0))
    act = np.asarray(activity, dtype=np.float64)
    act_sd = act.std(0)
    centred = (act - act.mean(0)) / np.where(act_sd > 0, act_sd, 1.0)
    cov = np.asarray(expression.T @ centred) / n  # centred activity: no mean correction needed
    with np.errstate(divide="ignore", invalid="ignore"):
        out = cov / sd[:, None]
    out[~np.isfinite(out)] = 0.0
    out[:, act_sd == 0] = 0.0
    return out


def coherence(correlations: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean correlation of a program's members with its activity, leaving out the best member.

    Leaving out the member that correlates best keeps a unit that fits one gene of a random
    set from looking coherent; a program needs two or more members that follow it.

    Examples
    --------
    >>> r = np.array([[0.9, 0.9], [0.8, 0.0], [0.7, 0.0]])
    >>> coherence(r, np.ones((3, 2), dtype=bool))
    array([0.75, 0.  ])
    """
    mask = np.asarray(mask, dtype=bool)
    r = np.where(mask, correlations, 0.0)
    n = mask.sum(0)
    best = np.where(mask, correlations, -np.inf).max(0)
    best = np.where(n > 0, best, 0.0)
    return (r.sum(0) - best) / np.maximum(n - 1, 1)


def feature_information(counts, likelihood: str) -> sparse.csr_matrix:
    """Information scale of each count about its log-rate, plugged in at the observed counts.

    The Poisson information ``x`` for count likelihoods, and ``p (1 - p)`` with ``p`` the
    feature's mean accessibility (in every cell) for the Bernoulli. The Poisson form is used for
    the negative binomial too: its information ``x theta / (x + theta)`` is capped by the
    dispersion ``theta``, which is small precisely for a strong gene the model does not explain,
    and a gene that carries a program should not lose its share for being poorly fitted.
    """
    X = sparse.csr_matrix(counts, dtype=np.float64, copy=True)
    if likelihood == "bernoulli":
        p = np.asarray((X > 0).mean(0)).ravel()
        return sparse.csr_matrix(np.broadcast_to(p * (1 - p), X.shape))
    return X


def explained_signal(
    information: sparse.csr_matrix, activity: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Signal each feature carries for each unit: ``|w_gk| sqrt(mean_c I_cg (z_ck - mean z_k)^2)``.

    The square is the quadratic (Fisher) approximation of the gain in log-likelihood, per cell,
    from letting unit ``k`` vary over cells rather than sit at its mean, through feature ``g``:
    weight times the unit's variation over cells times the feature's information scale.

    Returns
    -------
    ``(n_features, n_units)`` array.
    """
    centred = np.asarray(activity, dtype=np.float64)
    centred = (centred - centred.mean(0)) ** 2
    spread = np.asarray(information.T @ centred) / max(information.shape[0], 1)
    return np.abs(weights) * np.sqrt(np.maximum(spread, 0.0))


def effective_number(shares: np.ndarray) -> np.ndarray:
    """``exp(entropy)`` of each column's shares (normalised to sum 1): 1 for one carrier.

    Columns that are all zero give NaN.

    Examples
    --------
    >>> effective_number(np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])).round(2)
    array([1., 3.])
    """
    shares = np.asarray(shares, dtype=np.float64)
    total = shares.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = shares / total
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out = np.exp(-plogp.sum(0))
    out[~(total > 0)] = np.nan
    return out


def empirical_pvalues(statistic: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= s}) / (1 + n_null)`` for each ``s`` in ``statistic`` (larger = stronger).

    Valid (never anti-conservative) when ``s`` and the null draws are exchangeable.

    Examples
    --------
    >>> empirical_pvalues(np.array([5.0, 0.5]), np.array([0.0, 1.0, 2.0]))
    array([0.25, 0.75])
    """
    null = np.sort(np.asarray(null, dtype=np.float64))
    stat = np.asarray(statistic, dtype=np.float64)
    n_ge = len(null) - np.searchsorted(null, stat, side="left")
    p = (1.0 + n_ge) / (1.0 + len(null))
    return np.where(np.isnan(stat), 1.0, p)


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order.

    Examples
    --------
    >>> benjamini_hochberg(np.array([0.01, 0.02, 0.03, 0.5]))
    array([0.04, 0.04, 0.04, 0.5 ])
    """
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def member_statistics(
    expression: sparse.csr_matrix,
    information: sparse.csr_matrix,
    activity: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    weights: np.ndarray,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Correlation and explained signal at given (feature, unit) entries only.

    Works through the units in chunks so that memory stays at features x ``chunk`` whatever
    the number of programs.

    Parameters
    ----------
    expression
        Cells x features log-normalised expression (:func:`log_normalised`).
    information
        Cells x features information (:func:`feature_information`).
    activity
        Cells x units activities.
    rows, cols
        Feature and unit of every entry.
    weights
        Decoder weight of every entry.

    Returns
    -------
    ``(correlation, signal)``, one value per entry (see :func:`member_correlations` and
    :func:`explained_signal`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    corr = np.zeros(len(rows))
    signal = np.zeros(len(rows))
    weights = np.asarray(weights, dtype=np.float64)
    for start in range(0, activity.shape[1], chunk):
        sel = (cols >= start) & (cols < start + chunk)
        if not sel.any():
            continue
        block = activity[:, start : start + chunk]
        r = member_correlations(expression, block)
        s = explained_signal(information, block, np.ones((1, block.shape[1])))
        corr[sel] = r[rows[sel], cols[sel] - start]
        signal[sel] = np.abs(weights[sel]) * s[rows[sel], cols[sel] - start]
    return corr, signal


def program_summaries(
    n_units: int,
    cols: np.ndarray,
    in_mask: np.ndarray,
    correlation: np.ndarray,
    signal: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per-unit coherence, explained signal, effective number of carriers and top carrier.

    Parameters
    ----------
    n_units
        Number of units.
    cols
        Unit of every entry.
    in_mask
        Whether each entry is an annotated member (coherence is over members only; the
        explained signal and the carriers count every feature with a weight).
    correlation, signal
        Per-entry values of :func:`member_statistics`.

    Returns
    -------
    dict of arrays of length ``n_units``: ``coherence``, ``n_members``, ``explained`` (root of
    the summed squared signal), ``effective`` (``exp(entropy)`` of the signal shares),
    ``top_entry`` (index of the entry with the largest signal, -1 if none) and ``top_share``.
    """
    cols = np.asarray(cols, dtype=np.int64)
    in_mask = np.asarray(in_mask, dtype=bool)
    n_members = np.bincount(cols[in_mask], minlength=n_units)
    member_sum = np.bincount(cols[in_mask], weights=correlation[in_mask], minlength=n_units)
    best = np.full(n_units, -np.inf)
    np.maximum.at(best, cols[in_mask], correlation[in_mask])
    best[n_members == 0] = 0.0
    coherence_ = (member_sum - best) / np.maximum(n_members - 1, 1)
    coherence_[n_members < 2] = 0.0
    total = np.bincount(cols, weights=signal, minlength=n_units)
    explained = np.sqrt(np.bincount(cols, weights=signal**2, minlength=n_units))
    share = np.divide(signal, total[cols], out=np.zeros_like(signal), where=total[cols] > 0)
    plogp = np.where(share > 0, share * np.log(np.where(share > 0, share, 1.0)), 0.0)
    effective = np.exp(-np.bincount(cols, weights=plogp, minlength=n_units))
    effective[~(total > 0)] = np.nan
    top_entry = np.full(n_units, -1, dtype=np.int64)
    top_share = np.full(n_units, np.nan)
    order = np.lexsort((-share, cols))  # by unit, largest share first
    first = np.ones(len(order), dtype=bool)
    first[1:] = cols[order][1:] != cols[order][:-1]
    heads = order[first]
    top_entry[cols[heads]] = heads
    top_share[cols[heads]] = share[heads]
    top_share[~(total > 0)] = np.nan
    top_entry[~(total > 0)] = -1
    return {
        "coherence": coherence_,
        "n_members": n_members,
        "explained": explained,
        "effective": effective,
        "top_entry": top_entry,
        "top_share": top_share,
    }


def decoy_score(statistic: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Robust z-score of a statistic against the decoys: ``(s - median) / (1.4826 MAD)``."""
    null = np.asarray(null, dtype=np.float64)
    if len(null) == 0:
        return np.full(np.shape(statistic), np.nan)
    centre = np.median(null)
    spread = 1.4826 * np.median(np.abs(null - centre))
    if not spread > 0:
        spread = np.std(null) if np.std(null) > 0 else 1.0
    return (np.asarray(statistic, dtype=np.float64) - centre) / spread


def size_adjusted_scores(statistic: np.ndarray, sizes: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Standardise a statistic for the size of each feature set, using the decoys only.

    A unit fitted to ``n`` unrelated features still correlates with them by about
    ``1 / sqrt(n)``, and more so the fewer they are. The location and the spread of the decoys'
    statistic are fitted as linear functions of ``1 / sqrt(n)`` (least squares on the decoys,
    the spread on their absolute residuals), and every set, decoy or not, is scored as
    ``(statistic - location(n)) / spread(n)``. Programs and decoys are scored by the same
    rule, so their scores stay exchangeable under the null.

    Parameters
    ----------
    statistic
        Statistic of every set (programs and decoys).
    sizes
        Number of members of every set.
    null
        Boolean, ``True`` for the decoys.

    Returns
    -------
    The standardised scores.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sizes = rng.integers(5, 200, 300)
    >>> stat = 1 / np.sqrt(sizes) + rng.normal(0, 0.3, 300) / np.sqrt(sizes)
    >>> z = size_adjusted_scores(stat, sizes, np.ones(300, dtype=bool))
    >>> bool(abs(np.corrcoef(z, 1 / np.sqrt(sizes))[0, 1]) < 0.1)
    True
    """
    stat = np.asarray(statistic, dtype=np.float64)
    x = 1.0 / np.sqrt(np.maximum(np.asarray(sizes, dtype=np.float64), 1.0))
    null = np.asarray(null, dtype=bool)
    design = np.column_stack([np.ones_like(x), x])
    if null.sum() < 10 or np.ptp(x[null]) == 0:
        # too few decoys (or one size only) to fit a trend: centre and scale on the decoys
        centre = np.median(stat[null]) if null.any() else 0.0
        spread = np.std(stat[null]) if null.sum() > 1 else 1.0
        return (stat - centre) / (spread if spread > 0 else 1.0)
    coef = np.linalg.lstsq(design[null], stat[null], rcond=None)[0]
    resid = stat - design @ coef
    scale_coef = np.linalg.lstsq(design[null], np.abs(resid[null]), rcond=None)[0]
    floor = max(np.mean(np.abs(resid[null])) * 0.1, 1e-12)
    spread = np.maximum(design @ scale_coef, floor)
    return resid / spread
