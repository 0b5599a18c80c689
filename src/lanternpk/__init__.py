"""lanternpk: Bayesian biodistribution of IV-injected, luciferase-labelled cells.

The public API, for use from Python (the command line, ``lanternpk``, covers the same
steps)::

    import lanternpk as lpk

    spec = lpk.load_spec("models/muse_vs_msc.toml")
    obs = lpk.load_observations("data/als_mouse/observations.csv")
    model = lpk.build_model(spec, lpk.prepare_data(spec, obs),
                            lpk.load_calibration("data/als_mouse/calibration.csv"))
    idata = lpk.sample(model, lpk.SamplerSettings(seed=1))
    diagnostics = lpk.check_convergence(idata, lpk.parameter_names(model))

A whole fit that writes a run directory, as ``lanternpk fit`` does, is
``lanternpk.fit.fit``; it is not exported here because its name is also its module's.
Runs are opened with :func:`load_run` (which refuses a spec or data file that differs from
the one the run was fit to) and summarised with :func:`summary_from_run`.

Names are imported on first use, so that ``import lanternpk`` stays light (PyMC and JAX
load only when a name that needs them is used). Everything not listed in ``__all__`` is
internal and may change.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.1"

#: public name -> module that defines it
_EXPORTS = {
    "ModelSpec": "lanternpk.spec",
    "load_spec": "lanternpk.spec",
    "load_observations": "lanternpk.data.load",
    "load_calibration": "lanternpk.data.load",
    "ModelData": "lanternpk.model",
    "prepare_data": "lanternpk.model",
    "build_model": "lanternpk.model",
    "parameter_names": "lanternpk.model",
    "SamplerSettings": "lanternpk.settings",
    "sample": "lanternpk.inference",
    "check_convergence": "lanternpk.diagnostics",
    "estimand_draws": "lanternpk.estimands",
    "summarize_estimands": "lanternpk.estimands",
    "load_run": "lanternpk.fit",
    "summary_from_run": "lanternpk.fit",
    "run_ppc": "lanternpk.ppc",
    "compare_runs": "lanternpk.compare",
    "load_truth": "lanternpk.data.simulate",
    "simulate_study": "lanternpk.data.simulate",
    "DataError": "lanternpk.errors",
    "UsageError": "lanternpk.errors",
    "Problem": "lanternpk.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lanternpk' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
