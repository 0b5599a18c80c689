"""The closed-form solver against independent truth (matrix exponential, BDF), across
backends (NumPy, PyTensor, JAX agree), with finite gradients and mass balance.

Rates are drawn log-uniformly over 1e-4..10^1.5 per day for tissues and 1e2..1e5 for blood
(blood half-life of seconds to tissue half-lives of decades), and coincident rates (removable
singularities) are forced on purpose.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanternpk.solver.closed_form import blood_cells, homing_fraction, organ_cells, phi
from lanternpk.solver.reference import rate_matrix, solve_expm

jax.config.update("jax_enable_x64", True)

N_ORGANS = 4
TIMES = np.array([0.0, 1e-4, 0.01, 0.3, 1.0, 3.0, 14.0, 56.0, 180.0, 1000.0])
# blood efflux: a mouse passes its blood volume ~15×/min ≈ 2e4/day; the explicit-blood model
# is stated for q > r + k_lung (blood faster than the lung's own turnover), see closed_form.
blood_rate = st.floats(min_value=2, max_value=5).map(lambda e: 10.0**e)
slow_rate = st.floats(min_value=-4, max_value=1.5).map(lambda e: 10.0**e)


@st.composite
def kinetics(draw, *, explicit: bool):
    weights = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=N_ORGANS + 1,
                                     max_size=N_ORGANS + 1)))
    first_pass = weights[:N_ORGANS] / weights.sum()
    release = draw(st.one_of(st.just(0.0), slow_rate))
    loss = np.array(draw(st.lists(slow_rate, min_size=N_ORGANS, max_size=N_ORGANS)))
    efflux = draw(blood_rate) if explicit else None
    # force coincidences: organ j decays exactly as fast as the filter's effective rate
    coincide = draw(st.sampled_from(["none", "filter_rate", "two_organs"]))
    if coincide == "filter_rate":
        loss[1] = release * (1 - first_pass[0]) + loss[0]
    elif coincide == "two_organs":
        loss[2] = loss[1]
    return first_pass, np.asarray(release), loss, efflux


def _closed(first_pass, release, loss, efflux, times=TIMES):
    return organ_cells(first_pass, release, loss, times, filter_index=0, n_organs=N_ORGANS,
                       blood_efflux=None if efflux is None else np.asarray(efflux))


def _reference(first_pass, release, loss, efflux, times=TIMES):
    a, x0 = rate_matrix(first_pass, float(release), loss, filter_index=0, blood_efflux=efflux)
    return solve_expm(a, x0, times)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.one_of(kinetics(explicit=False), kinetics(explicit=True)))
def test_closed_form_matches_matrix_exponential(params):
    """1e-8 relative; absolute floor 1e-14 of the dose, the accuracy of expm itself
    (its error scales with eps × ||exp(A t)|| ≈ eps)."""
    first_pass, release, loss, efflux = params
    ours = _closed(first_pass, release, loss, efflux)
    ref = _reference(first_pass, release, loss, efflux)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref[:, :N_ORGANS], rtol=1e-8, atol=1e-14)
    if efflux is not None:
        blood = blood_cells(first_pass, release, loss, TIMES, filter_index=0,
                            blood_efflux=np.asarray(efflux))
        np.testing.assert_allclose(blood, ref[:, N_ORGANS], rtol=1e-8, atol=1e-14)


@settings(max_examples=100, deadline=None)
@given(params=st.one_of(kinetics(explicit=False), kinetics(explicit=True)))
def test_mass_balance(params):
    """Organs + blood + sink = dose; the sink comes from the reference's own flows."""
    first_pass, release, loss, efflux = params
    ours = _closed(first_pass, release, loss, efflux)
    ref = _reference(first_pass, release, loss, efflux)
    blood = 0.0 if efflux is None else blood_cells(
        first_pass, release, loss, TIMES, filter_index=0, blood_efflux=np.asarray(efflux))
    total = ours.sum(-1) + blood + ref[:, -1]
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


def test_coincident_rates_are_removable_singularities():
    """phi(a, a, t) = t exp(-a t), and phi is continuous through a = b."""
    t = np.array([0.5, 3.0, 400.0])
    a = 0.7
    np.testing.assert_allclose(phi(a, a, t), t * np.exp(-a * t), rtol=1e-15)
    # Against phi in 60-digit arithmetic at the same float64 rates. The tolerance is the
    # problem's own conditioning, not the formula's: exp(-a t) amplifies a relative error
    # of its argument a·t-fold (a·t = 280 at t = 400: ~6e-14 from rounding a alone); the
    # measured worst case is 1.8e-14, the old check allowed 0.8 at gap 1e-3.
    import mpmath

    for gap in (1e-12, 1e-9, 1e-6, 1e-3, 0.5, 30.0):
        b = a + gap
        with mpmath.workdps(60):
            exact = [float((mpmath.exp(-mpmath.mpf(a) * mpmath.mpf(s))
                            - mpmath.exp(-mpmath.mpf(b) * mpmath.mpf(s)))
                           / (mpmath.mpf(b) - mpmath.mpf(a))) for s in t]
        np.testing.assert_allclose(phi(a, b, t), exact, rtol=1e-13)
        np.testing.assert_allclose(phi(b, a, t), exact, rtol=1e-13)


def test_homing_fraction_is_the_total_influx():
    """Homing = f_j ∫ (blood outflow) = the organ's total intake, from the reference flows."""
    f = np.array([0.7, 0.03, 0.005, 0.1])
    k = np.array([0.35, 0.03, 0.0058, 0.2])
    release = np.asarray(1.0)
    ours = homing_fraction(f, release, k, filter_index=0)
    # total intake of organ j = ∫ k_j X_j dt + X_j(∞) = k_j ∫ X_j (all cells eventually die)
    grid = np.linspace(0, 4000, 400001)
    x = organ_cells(f, release, k, grid, filter_index=0, n_organs=4)
    intake = k * np.trapezoid(x, grid, axis=0)
    np.testing.assert_allclose(ours[1:], intake[1:], rtol=1e-6)
    assert ours[0] == f[0]


# --- backends ---------------------------------------------------------------------------

def _pytensor_solver(explicit: bool):
    f = pt.dvector("f")
    r = pt.dscalar("r")
    k = pt.dvector("k")
    t = pt.dvector("t")
    q = pt.dscalar("q") if explicit else None
    out = organ_cells(f, r, k, t, filter_index=0, n_organs=N_ORGANS, blood_efflux=q, xp=pt)
    objective = pt.sum(pt.log(out * 1e6 + 1.0))
    grads = pt.grad(objective, [f, r, k] + ([q] if explicit else []))
    inputs = [f, r, k, t] + ([q] if explicit else [])
    return pytensor.function(inputs, [out, objective, *grads])


def _jax_objective(f, r, k, t, q):
    out = organ_cells(f, r, k, t, filter_index=0, n_organs=N_ORGANS, blood_efflux=q, xp=jnp)
    return jnp.sum(jnp.log(out * 1e6 + 1.0))


_PT = {False: _pytensor_solver(False), True: _pytensor_solver(True)}
_JAX_GRAD = jax.jit(jax.grad(_jax_objective, argnums=(0, 1, 2, 4)))
_JAX_GRAD_FAST = jax.jit(jax.grad(lambda f, r, k, t: _jax_objective(f, r, k, t, None),
                                  argnums=(0, 1, 2)))


@settings(max_examples=60, deadline=None)
@given(params=st.one_of(kinetics(explicit=False), kinetics(explicit=True)))
def test_numpy_pytensor_jax_agree_with_finite_gradients(params):
    """Values agree to 1e-10 across backends; gradients are finite and agree to 1e-8."""
    first_pass, release, loss, efflux = params
    explicit = efflux is not None
    args = [first_pass, release, loss, TIMES] + ([np.asarray(efflux)] if explicit else [])
    out_np = _closed(first_pass, release, loss, efflux)
    out_pt, _, *grad_pt = _PT[explicit](*args)
    out_jax = organ_cells(*[jnp.asarray(a) for a in args[:4]], filter_index=0,
                          n_organs=N_ORGANS,
                          blood_efflux=jnp.asarray(efflux) if explicit else None, xp=jnp)
    np.testing.assert_allclose(out_pt, out_np, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(np.asarray(out_jax), out_np, rtol=1e-10, atol=1e-300)
    if explicit:
        grad_jax = _JAX_GRAD(*[jnp.asarray(a) for a in args])
    else:
        grad_jax = _JAX_GRAD_FAST(*[jnp.asarray(a) for a in args])
    for g_pt, g_jax in zip(grad_pt, grad_jax, strict=True):
        assert np.all(np.isfinite(g_pt)) and np.all(np.isfinite(np.asarray(g_jax)))
        np.testing.assert_allclose(np.asarray(g_jax), g_pt, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_gradient_matches_finite_differences(explicit, seed):
    """JAX gradient of a smooth objective vs central differences in log-parameters."""
    rng = np.random.default_rng(seed)
    f = rng.dirichlet(np.ones(N_ORGANS + 1))[:N_ORGANS]
    r = np.asarray(10 ** rng.uniform(-2, 0.5))
    k = 10 ** rng.uniform(-3, 0.5, N_ORGANS)
    q = np.asarray(10 ** rng.uniform(2, 4.5)) if explicit else None
    t = np.array([0.04, 1.0, 3.0, 14.0, 56.0])

    def objective(theta):
        lf, lr, lk = theta[:N_ORGANS], theta[N_ORGANS], theta[N_ORGANS + 1:2 * N_ORGANS + 1]
        return _jax_objective(jnp.exp(lf), jnp.exp(lr), jnp.exp(lk), t,
                              None if q is None else jnp.asarray(q))

    theta = jnp.concatenate([jnp.log(f), jnp.log(r)[None], jnp.log(k)])
    grad = np.asarray(jax.grad(objective)(theta))
    h = 1e-6
    fd = np.array([(objective(theta.at[i].add(h)) - objective(theta.at[i].add(-h))) / (2 * h)
                   for i in range(theta.size)])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_no_nan_gradient_at_coincidence_and_long_times():
    """Exactly coincident rates, zero release, t = 0 and 100 years: gradients stay finite."""
    f = jnp.array([0.6, 0.1, 0.1, 0.1])
    k = jnp.array([0.5, 0.5, 0.5, 1e-4])
    t = jnp.array([0.0, 1.0, 36500.0])
    for r in (0.0, 0.5 / 0.4):  # the second makes a = r (1 - f_F) + k_F = 1.0 ≠ k; first: a = k
        for q in (None, jnp.asarray(1e5)):
            grads = jax.grad(_jax_objective, argnums=(0, 1, 2))(f, jnp.asarray(r), k, t, q)
            for g in grads:
                assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("rate", [1e-4, 0.3, 2.0])
def test_phi_gradient_is_exact_at_coincident_rates(rate):
    """At a == b, d phi / d a = d phi / d b = -t² exp(-a t) / 2 on every backend.

    phi(a, b, t) is smooth through a == b; a form that broke the tie of ``min``/``abs`` on
    each of them separately would get the wrong one-sided mixture here.
    """
    t = np.array([1e-3, 0.5, 7.0, 90.0])
    expected = -0.5 * t**2 * np.exp(-rate * t)
    a = jnp.full(t.shape, rate)
    grad_a, grad_b = jax.grad(lambda a, b: jnp.sum(phi(a, b, t, xp=jnp)), argnums=(0, 1))(a, a)
    np.testing.assert_allclose(grad_a, expected, rtol=1e-10)
    np.testing.assert_allclose(grad_b, expected, rtol=1e-10)
    ap, bp = pt.dvector("a"), pt.dvector("b")
    total = pt.sum(phi(ap, bp, t, xp=pt))
    grads = pytensor.function([ap, bp], pytensor.grad(total, [ap, bp]))(a, a)
    for g in grads:
        np.testing.assert_allclose(g, expected, rtol=1e-10)


def test_phi_rates_far_apart_neither_warn_nor_give_nan_gradients():
    """|b − a| t beyond 1e103 (x³ of the unused series branch would overflow): NumPy gives
    the exact value without a RuntimeWarning and JAX a finite gradient."""
    a, b, t = np.array([1e-3, 1e-3]), np.array([1e300, 1e105]), np.array([2.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = phi(a, b, t)
    np.testing.assert_allclose(value, np.exp(-a * t) / (b - a), rtol=1e-14)
    grads = jax.grad(lambda a, b: jnp.sum(phi(a, b, t, xp=jnp)), argnums=(0, 1))(
        jnp.asarray(a), jnp.asarray(b))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
