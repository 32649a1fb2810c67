"""Class names: the one ImageNet-1k table, and reading a target class from what a user typed.

`imagenet_table` has one row per class (index, wnid, name, synonyms): the names are
torchvision's (what a model's ``categories`` and the results show), the wnids and synonyms
timm's bundled ImageNet info (offline). `--target`, ``--labels`` files and wnids in file names
all read this table:

* `parse_target` / `parse_target_spec` (``--target``): an index, an exact name, a unique
  substring of a name; for ImageNet models also a wnid or an unambiguous synonym;
* `imagenet_index` (labels files): an index, a wnid or an unambiguous name or synonym;
* `wnid_class` (file names): the first ImageNet-1k wnid in a name.

A leaf module: torch-free, it imports torchvision and timm only when the table is first read.

Example::

    >>> imagenet_table()[281].name, imagenet_table()[281].wnid
    ('tabby', 'n02123045')
    >>> parse_target("n02123045", imagenet_categories()), imagenet_index("tabby cat")
    (281, 281)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ImageNetClass",
    "TargetError",
    "imagenet_categories",
    "imagenet_index",
    "imagenet_table",
    "parse_target",
    "parse_target_spec",
    "wnid_class",
]

_WNID = re.compile(r"(?<![0-9A-Za-z])n\d{8}(?!\d)")


class TargetError(ValueError):
    """A target class is neither a valid index nor a known class name."""


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet-1k class.

    Attributes:
        index: its logit index (0..999).
        wnid: its WordNet id, e.g. ``n02123045``.
        name: torchvision's short name (``"tabby"``), as models' ``categories`` give it.
        synonyms: the WordNet lemmas (``("tabby", "tabby cat")``), lower case.
    """

    index: int
    wnid: str
    name: str
    synonyms: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def imagenet_table() -> tuple[ImageNetClass, ...]:
    """The 1,000 ImageNet-1k classes in the standard (torchvision/timm) index order."""
    from timm.data import ImageNetInfo
    from torchvision.models import ResNet50_Weights

    names = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    info = ImageNetInfo()
    wnids = info.label_names()
    rows = []
    for i, name in enumerate(names):
        description = info.index_to_description(i).lower()
        synonyms = dict.fromkeys([description, *(s.strip() for s in description.split(","))])
        rows.append(ImageNetClass(i, wnids[i], name, tuple(synonyms)))
    return tuple(rows)


def imagenet_categories() -> list[str]:
    """The 1,000 class names (torchvision's), index-aligned with ImageNet models' logits."""
    return [c.name for c in imagenet_table()]


@functools.lru_cache(maxsize=1)
def _lookups() -> tuple[dict[str, int], dict[str, int | None]]:
    """(wnid -> index, lower-case synonym -> index, or None where two classes share it)."""
    wnids = {c.wnid: c.index for c in imagenet_table()}
    names: dict[str, int | None] = {}
    for c in imagenet_table():
        for name in c.synonyms:
            names[name] = None if names.get(name, c.index) != c.index else c.index
    return wnids, names


def wnid_class(name: str) -> int | None:
    """The class of the first ImageNet-1k wnid (``n`` + 8 digits) in a file name, or None."""
    wnids, _ = _lookups()
    for match in _WNID.finditer(Path(str(name)).name):
        if match.group(0) in wnids:
            return wnids[match.group(0)]
    return None


def imagenet_index(value: str) -> int:
    """An index, a wnid or an unambiguous ImageNet name or synonym (any case) as an index.

    Raises:
        ValueError: unknown, or a name two classes share (``crane``).
    """
    wnids, names = _lookups()
    text = value.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if text in wnids:
        return wnids[text]
    key = text.lower()
    if key in names:
        index = names[key]
        if index is None:
            raise ValueError(
                f"class name '{text}' is ambiguous in ImageNet; give the index or wnid"
            )
        return index
    raise ValueError(f"unknown class '{text}' (expected an index, a wnid or an ImageNet name)")


def _is_imagenet(categories: Sequence[str]) -> bool:
    return len(categories) == 1000 and list(categories) == imagenet_categories()


def parse_target(spec: str | int, categories: Sequence[str]) -> int:
    """A class index or name as an index.

    Names: exact (any case), else a unique substring of one of ``categories``; for the ImageNet
    categories, a wnid or an unambiguous synonym too (`imagenet_index`).

    Raises:
        TargetError: out of range, unknown or ambiguous (the candidates listed), one line.
    """
    if isinstance(spec, int) or str(spec).strip().lstrip("-").isdigit():
        index = int(spec)
        if not 0 <= index < len(categories):
            raise TargetError(f"class index {index} is out of range 0..{len(categories) - 1}")
        return index
    wanted = str(spec).strip().lower()
    exact = [i for i, c in enumerate(categories) if c.lower() == wanted]
    if len(exact) == 1:
        return exact[0]
    matches = [i for i, c in enumerate(categories) if wanted in c.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        if _is_imagenet(categories):
            try:
                return imagenet_index(str(spec))
            except ValueError:
                pass
        raise TargetError(
            f"unknown class '{spec}' (give an index 0..{len(categories) - 1} or a name)"
        )
    shown = ", ".join(f"{i}={categories[i]}" for i in matches[:8])
    raise TargetError(f"class '{spec}' is ambiguous: {shown}{' ...' if len(matches) > 8 else ''}")


def parse_target_spec(spec: str | int, categories: Sequence[str]) -> str | int:
    """The CLI's ``--target``: ``"top1"``, ``"truth"``, or a class index from an index or a name.

    ``top1`` explains each image's top-1 class; ``truth`` its true class (from the ImageNet
    wnid in the file name or a ``--labels`` file; the run resolves it per image); anything
    else goes through `parse_target` (an index 0..K-1 or a class name).

    Raises:
        TargetError: one line naming the bad value and the valid forms.

    Example::

        >>> parse_target_spec("TOP1", ["cat", "dog"]), parse_target_spec("dog", ["cat", "dog"])
        ('top1', 1)
    """
    text = str(spec).strip()
    if text.lower() in ("top1", "top-1"):
        return "top1"
    if text.lower() == "truth":
        return "truth"
    if not text:
        raise TargetError("empty --target; use top1, truth, a class index or a class name")
    try:
        return parse_target(text, list(categories))
    except TargetError as exc:
        raise TargetError(f"{exc}; --target takes top1, truth, an index or a name") from None
