"""Independent reference solutions, for tests only: the full rate matrix, solved by
a matrix exponential in 40-digit arithmetic (mpmath) or by a stiff ODE integrator (BDF).

``scipy.linalg.expm`` is not used: on these triangular rate matrices with an exactly repeated
diagonal entry (coincident rates) it returned values off by 4% (scipy 1.17.1), while BDF
and mpmath agreed with each other.

The rate matrix is built from the flows themselves (blood → organ by first-pass fraction,
filter → blood release, organ → sink loss), not from the closed form, so agreement is a
real check of the algebra.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp


def rate_matrix(
    first_pass: np.ndarray,
    release: float,
    loss: np.ndarray,
    *,
    filter_index: int,
    blood_efflux: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rate matrix ``A`` (1/day) and initial state for one animal.

    State order: organs..., then blood (explicit model only), then sink. With fast blood the
    filter's release is redistributed at once by the first-pass fractions.

    Returns
    -------
    A : ndarray, shape (n, n)
        ``dx/dt = A x``.
    x0 : ndarray, shape (n,)
        State right after the bolus (dose = 1).
    """
    f = np.asarray(first_pass, dtype=float)
    k = np.asarray(loss, dtype=float)
    n = f.size
    other = 1.0 - f.sum()
    if blood_efflux is None:
        size = n + 1
        sink = n
        a = np.zeros((size, size))
        for j in range(n):
            a[j, j] -= k[j]
            a[sink, j] += k[j]
        # release from the filter goes through blood at once and is split again
        a[filter_index, filter_index] -= release
        a[:n, filter_index] += release * f
        a[sink, filter_index] += release * other
        x0 = np.zeros(size)
        x0[:n] = f
        x0[sink] = other
        return a, x0
    size = n + 2
    blood, sink = n, n + 1
    a = np.zeros((size, size))
    q = blood_efflux
    a[blood, blood] -= q
    a[:n, blood] += q * f
    a[sink, blood] += q * other
    for j in range(n):
        a[j, j] -= k[j]
        a[sink, j] += k[j]
    a[filter_index, filter_index] -= release
    a[blood, filter_index] += release
    x0 = np.zeros(size)
    x0[blood] = 1.0
    return a, x0


def solve_expm(a: np.ndarray, x0: np.ndarray, times: np.ndarray, *, digits: int = 40) -> np.ndarray:
    """State at each time by the matrix exponential in ``digits``-digit arithmetic.

    Returns
    -------
    ndarray, shape (n_times, n)
    """
    import mpmath

    with mpmath.workdps(digits):
        a_mp = mpmath.matrix(np.asarray(a, dtype=float).tolist())
        x_mp = mpmath.matrix(np.asarray(x0, dtype=float).tolist())
        rows = []
        for t in np.asarray(times, dtype=float):
            state = mpmath.expm(a_mp * mpmath.mpf(float(t))) * x_mp
            rows.append([float(v) for v in state])
    return np.array(rows)


def solve_bdf(
    a: np.ndarray, x0: np.ndarray, times: np.ndarray, *, rtol: float = 1e-10, atol: float = 1e-12
) -> np.ndarray:
    """State at each time by ``solve_ivp(method="BDF")``, shape (n_times, n)."""
    times = np.asarray(times, dtype=float)
    sol = solve_ivp(
        lambda _t, x: a @ x,
        (0.0, float(times.max())),
        x0,
        method="BDF",
        t_eval=times,
        rtol=rtol,
        atol=atol,
        jac=a,
    )
    if not sol.success:
        raise RuntimeError(f"reference BDF solve failed: {sol.message}")
    return sol.y.T
