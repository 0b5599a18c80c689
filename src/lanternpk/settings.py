"""How a fit samples: the settings every sampler takes, checked where they are made.

A light module (no PyMC, no JAX), so that commands check their options, and SBC each fit's
settings, before anything heavy is imported; :mod:`lanternpk.inference` does the sampling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lanternpk.argtypes import MAX_CHAINS, MAX_DRAWS, SEED_LIMIT
from lanternpk.errors import UsageError

#: Fewest draws per chain of a fit: its convergence checks need them (ArviZ's ESS needs 4).
MIN_DRAWS = 4

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
        for name, minimum in (("chains", 1), ("draws", MIN_DRAWS), ("tune", 0)):
            if getattr(self, name) < minimum:
                raise UsageError(f"--{name} must be at least {minimum}, "
                                 f"got {getattr(self, name)}")
        for name, maximum in (("chains", MAX_CHAINS), ("draws", MAX_DRAWS),
                              ("tune", MAX_DRAWS)):
            if getattr(self, name) > maximum:
                raise UsageError(f"--{name} must be at most {maximum}, "
                                 f"got {getattr(self, name)}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise UsageError(f"--seed must be at least 0 and below 2**32, got {self.seed}")
        if not 0.5 <= self.target_accept < 1:
            raise UsageError(f"--target-accept must be in [0.5, 1), got {self.target_accept}")

    def as_dict(self) -> dict:
        return asdict(self)
