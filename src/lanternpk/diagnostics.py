"""Convergence diagnostics with explicit pass/fail thresholds."""

from __future__ import annotations

import arviz as az
import numpy as np

#: Thresholds (Vehtari et al. 2021 for R-hat and ESS; Betancourt 2016 for E-BFMI).
RHAT_MAX = 1.01
ESS_MIN = 400
EBFMI_MIN = 0.3


def check_convergence(idata: az.InferenceData, var_names: list[str]) -> dict:
    """R-hat, bulk/tail ESS, divergences and E-BFMI, each with its pass/fail.

    Parameters
    ----------
    idata : arviz.InferenceData
        Posterior with ``sample_stats``.
    var_names : list of str
        Sampled (free) parameters to check.

    Returns
    -------
    dict
        ``rhat_max``, ``ess_bulk_min``, ``ess_tail_min``, ``divergences``, ``ebfmi_min``,
        ``checks`` (name → {value, threshold, passed}) and ``passed`` (all checks).
    """
    post = idata.posterior[var_names]
    rhat = _worst(az.rhat(post), np.nanmax)
    ess_bulk = _worst(az.ess(post, method="bulk"), np.nanmin)
    ess_tail = _worst(az.ess(post, method="tail"), np.nanmin)
    divergences = int(idata.sample_stats["diverging"].sum())
    ebfmi = float(np.min(az.bfmi(idata)))
    checks = {
        "rhat": {"value": rhat, "threshold": f"<= {RHAT_MAX}", "passed": rhat <= RHAT_MAX},
        "ess_bulk": {"value": ess_bulk, "threshold": f">= {ESS_MIN}",
                     "passed": ess_bulk >= ESS_MIN},
        "ess_tail": {"value": ess_tail, "threshold": f">= {ESS_MIN}",
                     "passed": ess_tail >= ESS_MIN},
        "divergences": {"value": divergences, "threshold": "== 0", "passed": divergences == 0},
        "ebfmi": {"value": ebfmi, "threshold": f">= {EBFMI_MIN}", "passed": ebfmi >= EBFMI_MIN},
    }
    return {
        "rhat_max": rhat,
        "ess_bulk_min": ess_bulk,
        "ess_tail_min": ess_tail,
        "divergences": divergences,
        "ebfmi_min": ebfmi,
        "checks": checks,
        "passed": all(c["passed"] for c in checks.values()),
    }


def _worst(dataset, reduce) -> float:
    values = np.concatenate([np.ravel(v.values) for v in dataset.data_vars.values()])
    return float(reduce(values))
