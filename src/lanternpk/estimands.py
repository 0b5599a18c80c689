"""Estimands of DESIGN.md, computed from kinetic (and measurement) parameters.

Every function accepts NumPy arrays with any leading dimensions (posterior draws, cell
types), so the same code serves the truth file of a simulation and a posterior.
Times in days, rates in 1/day, amounts as fractions of the injected dose.
"""

from __future__ import annotations

import numpy as np

from lanternpk.solver.closed_form import homing_fraction, organ_cells

#: Days at which `engrafted_fraction` is reported (DESIGN.md).
ENGRAFTED_DAYS = (1.0, 3.0, 7.0, 14.0, 28.0, 56.0)
#: Daily grid on which `time_to_undetectable_d` is searched, days.
DETECTION_GRID_D = np.arange(0.0, 366.0)


def kinetic_estimands(
    first_pass: np.ndarray,
    release: np.ndarray,
    loss: np.ndarray,
    *,
    filter_index: int,
    blood_efflux: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """First-pass, homing and engrafted fractions and half-lives of the typical animal.

    Parameters
    ----------
    first_pass : ndarray, shape (..., n_organs)
        First-pass fractions of blood outflow.
    release : ndarray, shape (...)
        Filter-to-blood release rate, 1/day.
    loss : ndarray, shape (..., n_organs)
        Loss rates, 1/day.
    filter_index : int
        Index of the filter organ (lung).
    blood_efflux : ndarray, shape (...), optional
        Blood efflux rate, 1/day; ``None`` for the fast-blood model.

    Returns
    -------
    dict
        ``first_pass_fraction`` and ``homing_fraction`` (..., n_organs);
        ``engrafted_fraction`` (..., n_days, n_organs) at :data:`ENGRAFTED_DAYS`;
        ``half_life_d`` (..., n_organs), days.
    """
    n_organs = first_pass.shape[-1]
    days = np.broadcast_to(np.asarray(ENGRAFTED_DAYS), (*release.shape, len(ENGRAFTED_DAYS)))
    return {
        "first_pass_fraction": first_pass,
        "homing_fraction": homing_fraction(first_pass, release, loss, filter_index=filter_index),
        "engrafted_fraction": organ_cells(
            first_pass, release, loss, days,
            filter_index=filter_index, n_organs=n_organs, blood_efflux=blood_efflux,
        ),
        "half_life_d": np.log(2.0) / loss,
    }


def first_undetectable_day(signal: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """First grid day from which the expected signal stays below the LOD.

    Parameters
    ----------
    signal : ndarray, shape (..., n_grid)
        Expected flux on :data:`DETECTION_GRID_D`, photons/s.
    lod : ndarray, broadcastable to (...)
        Limit of detection, photons/s.

    Returns
    -------
    ndarray, shape (...)
        Days; ``inf`` when the signal is still detectable on the last grid day.
    """
    below = signal < np.asarray(lod)[..., None]
    # stays below from day d on: reverse cumulative AND
    stays_below = np.flip(np.logical_and.accumulate(np.flip(below, -1), axis=-1), -1)
    any_below = stays_below.any(axis=-1)
    first = np.argmax(stays_below, axis=-1)
    return np.where(any_below, DETECTION_GRID_D[first], np.inf)
