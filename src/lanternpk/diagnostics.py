"""Convergence diagnostics with explicit pass/fail thresholds."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import arviz as az
import numpy as np
import xarray as xr

from lanternpk.settings import MIN_DRAWS

#: Thresholds (Vehtari et al. 2021 for R-hat and ESS; Betancourt 2016 for E-BFMI).
RHAT_MAX = 1.01
ESS_MIN = 400
EBFMI_MIN = 0.3


def check_convergence(idata: az.InferenceData, var_names: list[str]) -> dict:
    """R-hat, bulk/tail ESS, divergences, E-BFMI and finite draws, each with its pass/fail.

    A single chain is split into its two halves, given to ArviZ's rank-normalised split
    R-hat as two chains (which it splits again: R-hat over the chain's four quarters).
    Parameters whose every draw is the same value have no R-hat or ESS and are skipped; a
    parameter with a NaN or infinite draw fails the ``finite_draws`` check instead. A value
    that cannot be computed is ``None`` (valid JSON) and fails its check.

    Parameters
    ----------
    idata : arviz.InferenceData
        Posterior with ``sample_stats``; at least :data:`MIN_DRAWS` draws per chain.
    var_names : list of str
        Parameters to check: for a lanternpk model, :func:`lanternpk.model.parameter_names`
        (the free variables, a sign-expanded random effect by its identified scale and
        effects).

    Returns
    -------
    dict
        ``rhat_max``, ``ess_bulk_min``, ``ess_tail_min``, ``divergences``, ``ebfmi_min``,
        ``nonfinite_parameters`` (names), ``checks`` (name → {value, threshold, passed}) and
        ``passed`` (all checks).
    """
    post = idata.posterior[var_names]
    if post.sizes["draw"] < MIN_DRAWS:
        raise ValueError(f"convergence checks need at least {MIN_DRAWS} draws per chain, "
                         f"got {post.sizes['draw']}")
    nonfinite = [name for name in var_names if not np.isfinite(post[name].values).all()]
    with np.errstate(divide="ignore", invalid="ignore"):  # constant parameters give NaN
        rhat = _worst(az.rhat(post if post.sizes["chain"] > 1 else _halves(post)), max)
        ess_bulk = _worst(az.ess(post, method="bulk"), min)
        ess_tail = _worst(az.ess(post, method="tail"), min)
    divergences = int(idata.sample_stats["diverging"].sum())
    ebfmi = _finite(np.min(az.bfmi(idata)))
    checks = {
        "rhat": _check(rhat, "<=", RHAT_MAX),
        "ess_bulk": _check(ess_bulk, ">=", ESS_MIN),
        "ess_tail": _check(ess_tail, ">=", ESS_MIN),
        "divergences": _check(divergences, "==", 0),
        "ebfmi": _check(ebfmi, ">=", EBFMI_MIN),
        "finite_draws": {"value": len(nonfinite), "threshold": "== 0",
                         "passed": not nonfinite},
    }
    return {
        "rhat_max": rhat,
        "ess_bulk_min": ess_bulk,
        "ess_tail_min": ess_tail,
        "divergences": divergences,
        "ebfmi_min": ebfmi,
        "nonfinite_parameters": nonfinite,
        "checks": checks,
        "passed": all(c["passed"] for c in checks.values()),
    }


#: How each check's value is shown: decimals, and the rounding direction that points away
#: from the threshold, so that a shown value never contradicts its verdict (R-hat 1.0104
#: fails ≤ 1.01 and is shown 1.011, not 1.010; a bulk ESS of 399.6 is shown 399, not 400).
_SHOWN = {"rhat": ("0.001", ROUND_CEILING), "ess_bulk": ("1", ROUND_FLOOR),
          "ess_tail": ("1", ROUND_FLOOR), "ebfmi": ("0.01", ROUND_FLOOR)}


def format_check_value(check: str, value: float | int | None) -> str | None:
    """A convergence check's value as text (``None`` stays ``None``), rounded away from
    its threshold (:data:`_SHOWN`); counts (divergences, non-finite parameters) as they are.
    """
    if value is None or check not in _SHOWN:
        return None if value is None else str(value)
    step, rounding = _SHOWN[check]
    return str(Decimal(repr(float(value))).quantize(Decimal(step), rounding=rounding))


def _check(value: float | None, op: str, threshold: float) -> dict:
    compare = {"<=": np.less_equal, ">=": np.greater_equal, "==": np.equal}[op]
    return {"value": value, "threshold": f"{op} {threshold}",
            "passed": value is not None and bool(compare(value, threshold))}


def _halves(post: xr.Dataset) -> xr.Dataset:
    """One chain as two chains: its first and second half (an odd last draw dropped)."""
    half = post.sizes["draw"] // 2
    first = post.isel(chain=0, draw=slice(0, half))
    second = post.isel(chain=0, draw=slice(half, 2 * half)).assign_coords(draw=first.draw)
    return xr.concat([first, second], dim="chain")


def _worst(dataset: xr.Dataset, reduce) -> float | None:
    """Largest or smallest finite value over all parameters; None when there is none."""
    values = np.concatenate([np.ravel(v.values) for v in dataset.data_vars.values()])
    values = values[np.isfinite(values)]
    return float(reduce(values)) if values.size else None


def _finite(value) -> float | None:
    return float(value) if np.isfinite(value) else None
