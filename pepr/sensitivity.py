"""How robust a PePR ranking is to its weights.

Weight vectors are drawn from a Dirichlet distribution centred on the current (normalised)
weights; each draw re-scores every run with `pepr.score.pepr` on the normalised resource terms
that `pepr.score.score` already computed, and ranks the units (models) by mean PePR.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from pepr.errors import PeprError
from pepr.score import normalize_weights, pepr


def sample_weights(
    weights: Mapping[str, float], n: int = 500, concentration: float = 20.0, seed: int = 0
) -> pd.DataFrame:
    """`n` weight vectors (rows summing to 1) over the resources with a positive weight.

    Their mean is the normalised `weights`; a larger `concentration` keeps them closer to it.
    """
    centre = normalize_weights(weights)  # positive weights only
    if not centre:
        raise PeprError("sensitivity needs at least one positive weight")
    if n < 1 or concentration <= 0:
        raise PeprError("sensitivity needs n >= 1 samples and a positive concentration")
    names = list(centre)
    if len(names) == 1:
        return pd.DataFrame({names[0]: np.ones(n)})
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(concentration * np.array([centre[k] for k in names]), size=n)
    return pd.DataFrame(draws, columns=names)


def rank_stability(
    table: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    alpha: float = 1.0,
    unit: str = "model",
    top: int = 5,
) -> pd.DataFrame:
    """Per unit, the probability over `samples` of ranking first and of being in the top `top`.

    `table` is a `Scored.table`: a `performance` column and an `R_<resource>` column for each
    resource in `samples`. A unit with several rows is scored by the mean PePR of its rows.
    """
    if table.empty:
        return pd.DataFrame(columns=[unit, "p_first", f"p_top{top}"])
    codes, units = pd.factorize(table[unit], sort=True)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    counts = np.diff(np.r_[starts, len(codes)])
    terms = table[[f"R_{name}" for name in samples.columns]].to_numpy(float)[order]
    performance = table["performance"].to_numpy(float)[order]
    resource = samples.to_numpy(float) @ terms.T  # (samples, runs)
    scores = pepr(performance[None, :], resource, alpha)
    means = np.add.reduceat(scores, starts, axis=1) / counts
    ranking = np.argsort(-means, axis=1, kind="stable")
    n_units = len(units)
    p_first = np.bincount(ranking[:, 0], minlength=n_units) / len(samples)
    p_top = np.bincount(ranking[:, :top].ravel(), minlength=n_units) / len(samples)
    return pd.DataFrame({unit: units, "p_first": p_first, f"p_top{top}": p_top})


def kendall_tau(a, b) -> float | None:
    """Kendall's tau-b between two score vectors (higher = better in both); None if undefined."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return None
    tau = stats.kendalltau(a, b).statistic
    return None if np.isnan(tau) else float(tau)
