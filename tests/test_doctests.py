"""Every ``>>>`` example in camscope's docstrings runs (and says what the code does).

Examples that need what a test cannot have (a network download, a photo folder, a GPU) are
marked ``# doctest: +SKIP`` where they are written; every other example runs here, each
module in its own temporary working folder.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import camscope

#: Modules that import an optional extra at import time (skipped when it is missing).
OPTIONAL = {"camscope.run.ray_runner": "ray"}


def _modules() -> list[str]:
    names = [camscope.__name__]
    for info in pkgutil.walk_packages(camscope.__path__, prefix="camscope."):
        names.append(info.name)
    return sorted(names)


def _examples(name: str) -> list[doctest.DocTest]:
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, name, module=module) if t.examples]


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    failures = []
    for test in _examples(name):
        result = runner.run(test, out=failures.append)
        del result
    assert not failures, "".join(failures)
