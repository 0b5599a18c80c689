"""Sampling: one dispatch table over NUTS implementations, with fixed seeds.

Default sampler: numpyro (see ARCHITECTURE.md for the measurements behind the choice).
JAX-based samplers run chains in parallel only when JAX sees at least as many devices as
chains; :func:`configure_jax_devices` sets that up and must run before JAX is imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from dataclasses import asdict, dataclass

import arviz as az
import pymc as pm

from lanternpk.errors import UsageError

#: Samplers a user may pick; value = PyMC's ``nuts_sampler`` name.
SAMPLERS = {"numpyro": "numpyro", "nutpie": "nutpie", "pymc": "pymc", "blackjax": "blackjax"}
DEFAULT_SAMPLER = "numpyro"


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample; stored with every run."""

    sampler: str = DEFAULT_SAMPLER
    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    seed: int = 20261125
    target_accept: float = 0.9

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler '{self.sampler}'; choose one of {list(SAMPLERS)}")
        for name in ("chains", "draws", "tune"):
            if getattr(self, name) < (1 if name != "tune" else 0):
                raise UsageError(f"--{name} must be positive, got {getattr(self, name)}")
        if not 0.5 <= self.target_accept < 1:
            raise UsageError(f"--target-accept must be in [0.5, 1), got {self.target_accept}")

    def as_dict(self) -> dict:
        return asdict(self)


def configure_jax_devices(n_devices: int) -> None:
    """Let JAX's CPU backend expose ``n_devices`` devices (for parallel chains).

    Has effect only before JAX is first imported; later calls change nothing.
    """
    if "jax" in sys.modules:
        return
    flag = f"--xla_force_host_platform_device_count={n_devices}"
    existing = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in existing:
        os.environ["XLA_FLAGS"] = f"{existing} {flag}".strip()


def sample(model: pm.Model, settings: SamplerSettings, *, progressbar: bool = True
           ) -> az.InferenceData:
    """Draw posterior samples of ``model`` with ``settings``.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` and ``sample_stats`` groups.
    """
    if importlib.util.find_spec(settings.sampler) is None:
        raise UsageError(f"sampler '{settings.sampler}' is not installed; "
                         f"pip install 'lanternpk[samplers]' (or pip install {settings.sampler})")
    kwargs = {}
    if settings.sampler == "numpyro":
        kwargs["nuts_sampler_kwargs"] = {"chain_method": "parallel"}
    with model:
        return pm.sample(
            draws=settings.draws,
            tune=settings.tune,
            chains=settings.chains,
            cores=min(settings.chains, os.cpu_count() or 1),
            nuts_sampler=SAMPLERS[settings.sampler],
            random_seed=settings.seed,
            target_accept=settings.target_accept,
            progressbar=progressbar,
            compute_convergence_checks=False,
            idata_kwargs={"log_likelihood": False},
            **kwargs,
        )


def sample_prior(model: pm.Model, var_names: list[str], *, draws: int, seed: int
                 ) -> az.InferenceData:
    """Prior draws of ``var_names`` (used to tell findings from priors).

    The likelihood terms (including the censoring potential) play no part in a prior draw,
    so PyMC's warning that potentials are ignored does not apply and is silenced.
    """
    with model, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The effect of Potentials", category=UserWarning)
        return pm.sample_prior_predictive(draws=draws, var_names=var_names, random_seed=seed)
