"""Pure statistics of `lanternpk compare`: PSIS-LOO, leave-one-group-out, paired elpd differences.

No I/O and no model: arrays in, scores out (nats; higher is better); and the checks of what
they need, :func:`require_psis_draws` and :func:`require_finite_draws`. The methods and their
references are described in :mod:`lanternpk.compare`, which uses these functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lanternpk.errors import UsageError

#: Pareto k above which a PSIS estimate is unreliable.
PARETO_K_BAD = 0.7
#: Fewest posterior draws PSIS is run on: it fits its Pareto tail to the largest
#: ceil(min(S/5, 3√(S/r_eff))) weights, and ArviZ fits no tail of 4 or fewer (k = inf for
#: every unit): S/5 > 4 from 21 draws.
MIN_PSIS_DRAWS = 21


def require_psis_draws(posterior: Any, run_dir: str | os.PathLike, *, user: str) -> None:
    """Refuse a run that holds fewer posterior draws (all chains) than PSIS needs.

    Parameters
    ----------
    posterior : xarray.Dataset
        The run's posterior group (sizes ``chain`` and ``draw``).
    run_dir : path
        The run, named in the error.
    user : str
        What needs the draws (``"compare"``, ``"LOO-PIT"``), named in the error.

    Raises
    ------
    UsageError
        Fewer than :data:`MIN_PSIS_DRAWS` draws.
    """
    chains, per_chain = (int(posterior.sizes.get(d, 0)) for d in ("chain", "draw"))
    if chains * per_chain < MIN_PSIS_DRAWS:
        raise UsageError(f"{run_dir} holds {chains * per_chain} posterior draws (chains × "
                         f"draws = {chains} × {per_chain}); {user} needs at least "
                         f"{MIN_PSIS_DRAWS} for Pareto smoothing; fit it again with more "
                         "draws")


def require_finite_draws(posterior: Any, run_dir: str | os.PathLike, *, user: str) -> None:
    """Refuse a run with a NaN or infinite posterior draw: its scores would be NaN.

    Parameters
    ----------
    posterior : xarray.Dataset
        The run's posterior group.
    run_dir : path
        The run, named in the error.
    user : str
        What needs finite draws (``"compare"``, ``"ppc"``), named in the error.

    Raises
    ------
    UsageError
        Naming each variable with a non-finite draw, and the chain and draw of its first.
    """
    bad = []
    for name, values in posterior.data_vars.items():
        finite = np.isfinite(np.asarray(values.values, dtype=float))
        if not finite.all():
            chain, draw = np.argwhere(~finite)[0][:2]
            bad.append(f"{name} (chain {chain}, draw {draw})")
    if bad:
        raise UsageError(f"{run_dir} holds NaN or infinite posterior draws, in "
                         f"{', '.join(bad)}; {user} cannot use them (the fit's convergence "
                         "checks fail on them too): fit it again")


def log_mean_exp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """``log(mean(exp(a)))`` along ``axis``, computed stably."""
    from scipy.special import logsumexp

    a = np.asarray(a, dtype=float)
    return logsumexp(a, axis=axis) - np.log(a.shape[axis])


@dataclass(frozen=True)
class LooResult:
    """Pointwise PSIS leave-one-out scores.

    Attributes
    ----------
    elpd_i : ndarray, shape (n,)
        ``log p(y_i | y_−i)`` per unit (row or animal), nats.
    lppd_i : ndarray, shape (n,)
        In-sample ``log mean_s p(y_i | θ_s)``, nats.
    pareto_k : ndarray, shape (n,)
        PSIS shape estimate per unit (``> 0.7``: unreliable).
    labels : list of str
        Unit labels (row numbers or animal keys).
    """

    elpd_i: np.ndarray
    lppd_i: np.ndarray
    pareto_k: np.ndarray
    labels: list[str] = field(default_factory=list)

    @property
    def elpd(self) -> float:
        """Total elpd, nats."""
        return float(np.sum(self.elpd_i))

    @property
    def se(self) -> float:
        """Standard error of the total, ``sqrt(n var(elpd_i))`` (``ddof=1``), nats."""
        return elpd_se(self.elpd_i)

    @property
    def p_eff(self) -> float:
        """Effective number of parameters ``Σ (lppd_i − elpd_i)``."""
        return float(np.sum(self.lppd_i - self.elpd_i))

    @property
    def n_bad(self) -> int:
        """Units with Pareto ``k > 0.7``."""
        return int(np.sum(self.pareto_k > PARETO_K_BAD))


def elpd_se(pointwise: np.ndarray) -> float:
    """``sqrt(n · var(pointwise))`` with the sample variance (``ddof=1``); 0 for one unit."""
    pointwise = np.asarray(pointwise, dtype=float)
    if pointwise.size < 2:
        return 0.0
    return float(np.sqrt(pointwise.size * np.var(pointwise, ddof=1)))


def psis_loo(log_lik: np.ndarray, *, reff: float = 1.0,
             labels: Sequence[str] | None = None) -> LooResult:
    """PSIS leave-one-out predictive densities.

    Parameters
    ----------
    log_lik : ndarray, shape (draws, n)
        ``log p(y_i | θ_s)`` for posterior draws ``θ_s`` (nats); for a group of observations,
        the sum over the group (see :func:`group_log_lik`).
    reff : float
        Relative efficiency of the draws (effective sample size / draws).
    labels : sequence of str, optional
        Unit labels.

    Returns
    -------
    LooResult
        ``elpd_i = log Σ_s w_is p(y_i | θ_s)`` with Pareto-smoothed, self-normalised weights
        ``w_is ∝ 1 / p(y_i | θ_s)``.
    """
    import arviz as az

    log_lik = np.asarray(log_lik, dtype=float)
    if log_lik.ndim != 2:
        raise ValueError(f"log_lik must be (draws, n), got shape {log_lik.shape}")
    from scipy.special import logsumexp

    log_w, k = az.psislw(-log_lik.T.copy(), reff=reff)
    elpd_i = logsumexp(log_w + log_lik.T, axis=-1)
    lppd_i = log_mean_exp(log_lik, axis=0)
    n = log_lik.shape[1]
    return LooResult(elpd_i=np.asarray(elpd_i), lppd_i=np.asarray(lppd_i),
                     pareto_k=np.asarray(k, dtype=float).reshape(n),
                     labels=[str(v) for v in labels] if labels is not None
                     else [str(i) for i in range(n)])


def group_log_lik(log_lik: np.ndarray, groups: Sequence) -> tuple[np.ndarray, list[str]]:
    """Sum pointwise log-likelihoods within groups (animals).

    Parameters
    ----------
    log_lik : ndarray, shape (draws, n)
        Pointwise log-likelihood (nats).
    groups : sequence, length n
        Group label of each column.

    Returns
    -------
    summed : ndarray, shape (draws, groups)
        Joint log-likelihood of each group's rows.
    labels : list of str
        Group labels in order of first appearance.
    """
    log_lik = np.asarray(log_lik, dtype=float)
    keys = [str(g) for g in groups]
    if len(keys) != log_lik.shape[1]:
        raise ValueError(f"{len(keys)} group labels for {log_lik.shape[1]} columns")
    labels = list(dict.fromkeys(keys))
    codes = pd.Categorical(keys, categories=labels).codes
    summed = np.zeros((log_lik.shape[0], len(labels)))
    np.add.at(summed.T, codes, log_lik.T)
    return summed, labels


def psis_loao(log_lik: np.ndarray, groups: Sequence, *, reff: float = 1.0) -> LooResult:
    """Leave-one-group-out PSIS on the summed conditional log-likelihood of each group.

    The joint log score per group is ``Σ_{i∈g} log p(y_i | θ_s, b_g,s)`` with the group's
    posterior random effects ``b_g,s``; the importance ratios ``1 / p(y_g | θ, b_g)`` turn
    the full posterior into ``p(θ, b_g | y_−g)``, so the estimate targets the predictive
    density of a *new* group ``p(y_g | y_−g) = ∫ p(y_g | θ, b) p(b | θ) p(θ | y_−g)``; it is
    reliable only where Pareto ``k ≤ 0.7``.

    Parameters
    ----------
    log_lik : ndarray, shape (draws, n)
        Pointwise conditional log-likelihood (nats).
    groups : sequence, length n
        Group (animal) of each column.
    reff : float
        Relative efficiency of the draws.
    """
    summed, labels = group_log_lik(log_lik, groups)
    return psis_loo(summed, reff=reff, labels=labels)


def relative_efficiency(log_lik: np.ndarray, n_chains: int) -> float:
    """Mean relative efficiency of ``exp(log_lik)`` over columns, from the chains.

    Parameters
    ----------
    log_lik : ndarray, shape (draws, n)
        Stacked chain-major draws (chain 0's draws first).
    n_chains : int
        Number of chains; 1 (or draws not divisible by it) gives 1.0.

    Returns
    -------
    float
        ``mean_i ESS_mean(p(y_i | θ)) / draws``, clipped to [0.01, 1].
    """
    import arviz as az

    log_lik = np.asarray(log_lik, dtype=float)
    s, n = log_lik.shape
    if n_chains < 2 or s % n_chains:
        return 1.0
    lik = np.exp(log_lik - log_lik.max(axis=0, keepdims=True)).reshape(n_chains, s // n_chains, n)
    ess = az.ess(az.convert_to_dataset({"lik": lik}), method="mean")["lik"].values
    ess = np.where(np.isfinite(ess), ess, s)
    return float(np.clip(np.mean(ess) / s, 0.01, 1.0))


def elpd_difference(best_i: np.ndarray, other_i: np.ndarray) -> tuple[float, float]:
    """Paired difference of two pointwise elpd vectors and its standard error.

    Parameters
    ----------
    best_i, other_i : ndarray, shape (n,)
        Pointwise elpd of two models on the same units (nats).

    Returns
    -------
    diff : float
        ``Σ_i (best_i − other_i)``, nats.
    se : float
        ``sqrt(n · var(best_i − other_i))`` (``ddof=1``), nats.
    """
    best_i = np.asarray(best_i, dtype=float)
    other_i = np.asarray(other_i, dtype=float)
    if best_i.shape != other_i.shape:
        raise ValueError(f"pointwise elpds differ in shape: {best_i.shape} vs {other_i.shape}")
    d = best_i - other_i
    return float(np.sum(d)), elpd_se(d)


def importance_log_mean(log_ratio: np.ndarray, *, reff: float = 1.0, group_size: int = 1,
                        n_chains: int = 1) -> tuple[float, float, float]:
    """``log mean(exp(log_ratio))`` with Pareto-smoothed ratios, its Pareto k and MC error.

    Parameters
    ----------
    log_ratio : ndarray, shape (n,)
        Log importance ratios (log target density − log proposal density, times the
        integrand), e.g. ``log p(y | θ_s, b_s) + log N(b_s) − log q(b_s)``.
    reff : float
        Relative efficiency of the draws (Pareto smoothing; and the MC error when
        ``n_chains`` is 1).
    group_size : int
        Ratios come in consecutive groups of this many that share one outer draw (``M``
        proposal draws per MCMC draw ``θ_s``). They are correlated through ``θ_s``, so the
        MC error is that of the ``n / group_size`` group means, not of ``n`` independent
        ratios (which understates it up to ``sqrt(group_size)``-fold).
    n_chains : int
        The groups are MCMC draws stacked chain-major from this many chains; with two or
        more, the group means count by their effective sample size (ArviZ's ``ess``,
        method ``"mean"``), so autocorrelated draws are not counted as independent.

    Returns
    -------
    value : float
        Estimate of ``log E_q[ratio]`` from the smoothed ratios.
    pareto_k : float
        Shape of the ratios' tail (``> 0.7``: unreliable).
    mc_se : float
        Approximate Monte Carlo standard error of ``value``, nats (delta method:
        ``sd(group mean of ratio) / (sqrt(ESS of the group means) · mean(ratio))``).
    """
    import arviz as az

    log_ratio = np.asarray(log_ratio, dtype=float).ravel()
    if group_size < 1 or log_ratio.size % group_size:
        raise ValueError(f"{log_ratio.size} ratios do not split into groups of {group_size}")
    smoothed, k = az.psislw(log_ratio[None, :].copy(), reff=reff, normalize=False)
    smoothed = np.asarray(smoothed).ravel()
    value = float(log_mean_exp(smoothed))
    means = np.exp(smoothed - value).reshape(-1, group_size).mean(axis=1)
    ess = means.size * reff
    if n_chains >= 2 and means.size % n_chains == 0:
        chains = means.reshape(n_chains, -1)
        ess = float(az.ess(chains, method="mean")) if np.ptp(chains) > 0 else means.size
    mc_se = float(np.std(means, ddof=1) / np.sqrt(ess))
    return value, float(np.asarray(k).ravel()[0]), mc_se
