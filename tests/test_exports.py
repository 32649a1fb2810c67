"""One re-export list: method classes are exported from the registry, never named by hand."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import camscope
import camscope.methods

PACKAGE = Path(camscope.__file__).parent


def test_every_registered_class_is_exported_from_both():
    classes = {spec.cls.__name__: spec.cls for spec in camscope.METHODS.values()}
    for module in (camscope, camscope.methods):
        for name, cls in classes.items():
            assert name in module.__all__, (module.__name__, name)
            assert getattr(module, name) is cls


def test_no_init_names_a_method_class():
    classes = {spec.cls.__name__ for spec in camscope.METHODS.values()}
    for path in (PACKAGE / "__init__.py", PACKAGE / "methods" / "__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if ast.get_docstring(tree) is not None:  # the usage examples may name classes
            tree.body = tree.body[1:]
        text = ast.unparse(tree)
        named = {c for c in classes if re.search(rf"\b{re.escape(c)}\b", text)}
        assert not named, (path.name, sorted(named))
