"""Exact live-cell kinetics after an intravenous bolus, written once for NumPy, PyTensor and JAX.

The system (DESIGN.md, SCIENCE.md) is linear with constant rates. Blood empties into organs by
first-pass fractions ``f`` (a sub-simplex; the remainder goes to the unobserved sink: liver,
spleen, death in blood). One *filter* organ (the lung) releases cells back to blood at rate
``r``; every organ ``j`` loses cells (death, clearance) at rate ``k_j``. All rates are per day,
all amounts are fractions of the injected dose.

Two blood models are solved in closed form:

*fast blood* (blood outflow is an instantaneous split; exact in the limit of infinite efflux)
    filter ``F``:   X_F(t) = f_F exp(-a t),  a = r (1 - f_F) + k_F
    organ ``j``:    X_j(t) = f_j exp(-k_j t) + r f_F f_j phi(a, k_j, t)

*explicit blood* (blood is a compartment with efflux rate ``q``)
    the blood-filter 2x2 block has decay rates mu1 > mu2 > 0 (roots of
    mu^2 - (q + s) mu + q (s - f_F r) = 0 with s = r + k_F), and
    B(t)   = exp(-mu1 t) + (mu1 - q) phi(mu2, mu1, t)
    (stated for q > r + k_F: blood turns over faster than the filter organ, as it does by
    four orders of magnitude; at q = r + k_F with f_F r = 0 the eigenvalues merge and the
    gradient of mu1 - mu2 = sqrt(...) is infinite, although the values stay exact)
    X_F(t) = q f_F phi(mu2, mu1, t)
    X_j(t) = q f_j [phi(mu1, k_j, t)
                    + (mu1 - q) (phi(mu2, k_j, t) - phi(mu1, k_j, t)) / (mu1 - mu2)]

where ``phi(a, b, t) = (exp(-a t) - exp(-b t)) / (b - a)`` is the convolution of two
exponentials, evaluated (see :func:`phi`) so that it stays exact and differentiable through
coincident rates (the singularity is removable) and across rates spanning many orders of
magnitude. Every ``where`` has finite values in both
branches, so reverse-mode gradients are finite under JAX and PyTensor too.

The functions take the array namespace ``xp`` (``numpy``, ``jax.numpy`` or
``pytensor.tensor``) as a keyword, and broadcast over any leading (animal, draw) dimensions.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

Array = Any

#: |b - a| t below which (1 - exp(-x)) / x is evaluated by its Taylor series (the first
#: omitted term, x⁴/120, is < 1e-14 there).
_SERIES_BELOW = 1e-3


def _where(xp: ModuleType, cond: Array, a: Array, b: Array) -> Array:
    return xp.where(cond, a, b)


def phi(a: Array, b: Array, t: Array, *, xp: ModuleType = np) -> Array:
    """Convolution of two unit exponentials, ``∫_0^t exp(-a s) exp(-b (t - s)) ds``.

    Written as ``phi = t exp(-lo t) h(gap t)`` with ``lo = min(a, b)``, ``gap = |b - a|``
    and ``h(x) = (1 - exp(-x)) / x``: the exponent is ≤ 0 and exact, so nothing overflows or
    cancels however far apart the rates are, and ``h`` is taken from ``expm1`` (or its Taylor
    series for ``x < 1e-3``), so nothing cancels when they nearly coincide. ``lo`` and
    ``gap`` are picked by one ``where`` on ``a <= b``: at ``a == b`` both follow the same
    one-sided branch, whose derivative is the true one because ``phi`` is smooth there (a
    separate ``min`` and ``abs`` would each break the tie their own way, and backends differ).
    Each branch sees only the arguments it is used for (the series a zero where ``x`` is
    large, ``expm1`` a one where it is small), so both are finite everywhere, nothing warns,
    and reverse-mode gradients are finite too.

    Parameters
    ----------
    a, b : array_like
        Decay rates, 1/day, ≥ 0. May coincide.
    t : array_like
        Time since the start, days, ≥ 0.
    xp : module
        Array namespace (numpy, jax.numpy or pytensor.tensor).

    Returns
    -------
    array
        ``(exp(-a t) - exp(-b t)) / (b - a)``, days; ``t exp(-a t)`` when ``a == b``.
    """
    a_lower = a <= b
    lo = _where(xp, a_lower, a, b)
    x = _where(xp, a_lower, b - a, a - b) * t
    tiny = x < _SERIES_BELOW
    x_series = _where(xp, tiny, x, xp.zeros_like(x))  # huge x would overflow x³ (unused)
    x_safe = _where(xp, tiny, xp.ones_like(x), x)
    h = _where(xp, tiny,
               1.0 - x_series / 2.0 + x_series * x_series / 6.0
               - x_series * x_series * x_series / 24.0,
               -xp.expm1(-x_safe) / x_safe)
    return t * xp.exp(-lo * t) * h


def _prepare(first_pass: Array, release: Array, loss: Array, t: Array, filter_index: int):
    """Give inputs a (..., time, organ) layout."""
    f = first_pass[..., None, :]
    k = loss[..., None, :]
    r = release[..., None, None]
    tt = t[..., :, None]
    # integer index then new axes: broadcastable under PyTensor's static shapes
    f_filter = first_pass[..., filter_index][..., None, None]
    k_filter = loss[..., filter_index][..., None, None]
    return f, k, r, tt, f_filter, k_filter


def _filter_mask(n_organs: int, filter_index: int) -> np.ndarray:
    if not 0 <= filter_index < n_organs:
        raise ValueError(f"filter_index {filter_index} is not an organ index (0..{n_organs - 1})")
    mask = np.zeros(n_organs, dtype=bool)
    mask[filter_index] = True
    return mask


def organ_cells(
    first_pass: Array,
    release: Array,
    loss: Array,
    t: Array,
    *,
    filter_index: int,
    n_organs: int,
    blood_efflux: Array | None = None,
    xp: ModuleType = np,
) -> Array:
    """Live cells in every organ compartment, as a fraction of the injected dose.

    Parameters
    ----------
    first_pass : array, shape (..., n_organs)
        Fraction of blood outflow entering each organ on one pass (sum ≤ 1).
    release : array, shape (...)
        Rate at which the filter organ returns live cells to blood, 1/day.
    loss : array, shape (..., n_organs)
        Loss rate (death, clearance) of each organ, 1/day.
    t : array, shape (..., n_times)
        Time since injection, days, ≥ 0.
    filter_index : int
        Index of the organ that releases cells back to blood (the lung).
    n_organs : int
        Number of organ compartments (static, needed for symbolic backends).
    blood_efflux : array, shape (...), optional
        Rate at which cells leave blood, 1/day. ``None`` solves the fast-blood limit.
    xp : module
        Array namespace (numpy, jax.numpy or pytensor.tensor).

    Returns
    -------
    array, shape (..., n_times, n_organs)
        Live cells per organ / dose.
    """
    mask = _filter_mask(n_organs, filter_index)
    f, k, r, tt, f_filter, k_filter = _prepare(first_pass, release, loss, t, filter_index)
    if blood_efflux is None:
        a = r * (1.0 - f_filter) + k_filter
        in_filter = f_filter * xp.exp(-a * tt)
        elsewhere = f * xp.exp(-k * tt) + r * f_filter * f * phi(a, k, tt, xp=xp)
        return _where(xp, mask, in_filter, elsewhere)

    q = blood_efflux[..., None, None]
    mu1, mu2, mu1_minus_q, gap = _blood_filter_rates(q, r, f_filter, k_filter, xp=xp)
    in_filter = q * f_filter * phi(mu2, mu1, tt, xp=xp)
    gap_safe = _where(xp, gap > 0, gap, xp.ones_like(gap))
    second = _where(
        xp, gap > 0, (phi(mu2, k, tt, xp=xp) - phi(mu1, k, tt, xp=xp)) / gap_safe, 0.0 * k
    )
    elsewhere = q * f * (phi(mu1, k, tt, xp=xp) + mu1_minus_q * second)
    return _where(xp, mask, in_filter, elsewhere)


def blood_cells(
    first_pass: Array,
    release: Array,
    loss: Array,
    t: Array,
    *,
    filter_index: int,
    blood_efflux: Array,
    xp: ModuleType = np,
) -> Array:
    """Live cells in blood / dose, explicit-blood model. Shape (..., n_times).

    Parameters are those of :func:`organ_cells`; ``blood_efflux`` (1/day) is required.
    """
    _, _, r, tt, f_filter, k_filter = _prepare(first_pass, release, loss, t, filter_index)
    q = blood_efflux[..., None, None]
    mu1, mu2, mu1_minus_q, _ = _blood_filter_rates(q, r, f_filter, k_filter, xp=xp)
    blood = xp.exp(-mu1 * tt) + mu1_minus_q * phi(mu2, mu1, tt, xp=xp)
    return blood[..., 0]


def _blood_filter_rates(q: Array, r: Array, f_filter: Array, k_filter: Array, *, xp: ModuleType):
    """Decay rates of the blood-filter block, computed without cancellation.

    Returns ``mu1`` (fast, ≈ q), ``mu2`` (slow), ``mu1 - q`` and ``mu1 - mu2``, all 1/day.
    """
    s = r + k_filter
    back = f_filter * r  # rate product that couples blood and filter
    gap = xp.sqrt((q - s) ** 2 + 4.0 * q * back)
    mu1 = 0.5 * (q + s + gap)
    # mu1 - q = (s - q + gap) / 2 cancels catastrophically when q >> s; rationalise there.
    denom = gap + q - s
    denom_safe = _where(xp, denom > 0, denom, xp.ones_like(denom))
    mu1_minus_q = _where(xp, q >= s, 2.0 * q * back / denom_safe, 0.5 * (s - q + gap))
    mu2 = q * (r * (1.0 - f_filter) + k_filter) / mu1
    return mu1, mu2, mu1_minus_q, gap


def homing_fraction(
    first_pass: Array, release: Array, loss: Array, *, filter_index: int, xp: ModuleType = np
) -> Array:
    """Fraction of the dose that ever enters each organ (DESIGN.md estimand).

    First passes plus re-circulation after release from the filter organ:
    ``f_j (r + k_F) / (r (1 - f_F) + k_F)`` for organ ``j``; for the filter organ itself, its
    first-pass fraction. The same in the fast- and explicit-blood models.

    Parameters
    ----------
    first_pass : array, shape (..., n_organs)
        First-pass fractions.
    release : array, shape (...)
        Filter-to-blood release rate, 1/day.
    loss : array, shape (..., n_organs)
        Loss rates, 1/day.
    filter_index : int
        Index of the filter organ.
    xp : module
        Array namespace.

    Returns
    -------
    array, shape (..., n_organs)
    """
    f_filter = first_pass[..., filter_index][..., None]
    k_filter = loss[..., filter_index][..., None]
    r = release[..., None]
    boost = (r + k_filter) / (r * (1.0 - f_filter) + k_filter)
    mask = _filter_mask(first_pass.shape[-1], filter_index)
    return _where(xp, mask, first_pass, first_pass * boost)
