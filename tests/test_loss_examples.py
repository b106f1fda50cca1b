"""Every public loss (ckd_jax.losses.__all__) has a runnable `>>>` example in its docstring, as
optax's do, and every example in the ckd_jax.losses modules gives the output it shows."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import ckd_jax.losses as L

MODULES = [m.name for m in pkgutil.iter_modules(L.__path__, "ckd_jax.losses.")]


def test_every_public_loss_has_an_example():
    missing = [n for n in L.__all__ if ">>>" not in (inspect.getdoc(getattr(L, n)) or "")]
    assert missing == []


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (see the output)"
    public = [n for n in L.__all__ if getattr(L, n).__module__ == name]
    assert result.attempted >= len(public)
