"""The public API of ``lanternpk`` (DESIGN.md, style 11): every exported name resolves to
the object its module defines, and ``import lanternpk`` alone loads neither PyMC nor JAX."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import lanternpk


@pytest.mark.parametrize("name", sorted(lanternpk._EXPORTS))
def test_each_exported_name_is_its_modules_object(name):
    module = importlib.import_module(lanternpk._EXPORTS[name])
    assert getattr(lanternpk, name) is getattr(module, name)
    assert name in lanternpk.__all__ and name in dir(lanternpk)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'build_modle'"):
        lanternpk.build_modle  # noqa: B018


def test_importing_the_package_loads_no_heavy_library():
    code = ("import sys, lanternpk; "
            "print(sorted(m for m in ('pymc', 'pytensor', 'jax', 'arviz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
