"""The examples in blm's docstrings run and show what they say: every module of the
package is searched, and at least the modules named here must hold examples."""

import doctest
import importlib
import pkgutil

import pytest

import blm

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(blm.__path__, "blm.") if not m.name.endswith("__main__")
)
MUST_HAVE_EXAMPLES = {"blm.laplace", "blm.estimator"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name in MUST_HAVE_EXAMPLES:
        assert result.attempted > 0
