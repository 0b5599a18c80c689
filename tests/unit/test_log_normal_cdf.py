"""The censored-data term log Φ(z) of the model, against scipy (deterministic)."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.special import log_ndtr

from lanternpk.model import log_normal_cdf


@pytest.mark.parametrize("mode", ["FAST_RUN", "JAX"])
def test_log_normal_cdf_matches_log_ndtr_with_gradient(mode):
    """Values within 1e-8 absolute and gradients within 1e-6 relative on z ∈ [−60, 8].

    The bound is set by the asymptotic series below z = −20, whose first omitted term is
    105/z⁸ = 4e-9 there; above −20 the direct form agrees to ~1e-13. The old switch at
    z = −5 erred by 2e-4 (the omitted term there is 2.7e-4), which this test rejects.
    """
    z = pt.dvector("z")
    value = log_normal_cdf(z)
    f = pytensor.function([z], [value, pt.grad(value.sum(), z)], mode=mode)
    zs = np.concatenate([np.linspace(-60.0, 8.0, 2001), [-20.0, np.nextafter(-20.0, 0),
                                                         np.nextafter(-20.0, -30), -5.0]])
    got, grad = (np.asarray(x) for x in f(zs))
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(got, log_ndtr(zs), rtol=0, atol=1e-8)
    exact_grad = np.exp(-0.5 * zs**2 - 0.5 * np.log(2 * np.pi) - log_ndtr(zs))
    np.testing.assert_allclose(grad, exact_grad, rtol=1e-6)


def test_log_normal_cdf_is_finite_far_in_the_tail():
    """No −inf or NaN where erfc underflows (z ≪ −37) or for huge positive z."""
    z = pt.dvector("z")
    value = log_normal_cdf(z)
    f = pytensor.function([z], [value, pt.grad(value.sum(), z)])
    got, grad = f(np.array([-1e6, -1e3, -40.0, 40.0, 1e6]))
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(got[:3], log_ndtr(np.array([-1e6, -1e3, -40.0])), rtol=1e-12)
