"""camscope.classes: the one ImageNet table, read alike by --target and the labels code."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import ResNet50_Weights

from camscope.classes import (
    TargetError,
    imagenet_categories,
    imagenet_index,
    imagenet_table,
    parse_target,
    wnid_class,
)
from camscope.metrics import load_labels, truth_from_filename


def _old_parse_target(spec: str, categories: list[str]) -> int | None:
    """--target before the table: exact name (any case), else a unique substring; else None."""
    wanted = spec.strip().lower()
    exact = [i for i, c in enumerate(categories) if c.lower() == wanted]
    if len(exact) == 1:
        return exact[0]
    matches = [i for i, c in enumerate(categories) if wanted in c.lower()]
    return matches[0] if len(matches) == 1 else None


def test_table_rows_are_torchvision_names_and_timm_wnids():
    from timm.data import ImageNetInfo

    table = imagenet_table()
    info = ImageNetInfo()
    assert [c.index for c in table] == list(range(1000))
    assert imagenet_categories() == list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    assert [c.wnid for c in table] == list(info.label_names())
    assert table[0].synonyms == ("tench, tinca tinca", "tench", "tinca tinca")


def test_target_names_resolve_as_before():
    categories = imagenet_categories()
    for c in imagenet_table():
        old = _old_parse_target(c.name, categories)
        if old is not None:
            assert parse_target(c.name, categories) == old
        assert parse_target(c.wnid, categories) == c.index == imagenet_index(c.wnid)


def test_labels_and_target_read_the_same_table(tmp_path):
    categories = imagenet_categories()
    # A synonym no torchvision name contains: the labels code always knew it, --target now too.
    assert imagenet_index("Tinca tinca") == parse_target("Tinca tinca", categories) == 0
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class\na.png,n02123045\nb.png,tabby cat\nc.png,7\n")
    assert load_labels(labels) == {"a.png": 281, "b.png": 281, "c.png": 7}
    assert truth_from_filename("ILSVRC2012_val_00000001_n01751748.png") == 65
    assert wnid_class("x/n01440764_tench.JPEG") == 0 and wnid_class("n99999999.png") is None
    with pytest.raises(ValueError, match="ambiguous"):
        imagenet_index("crane")  # two classes share the name
    assert parse_target("crane", categories) == 517  # torchvision's names tell them apart
    with pytest.raises(TargetError, match="ambiguous"):
        parse_target("terrier", categories)


def test_other_models_categories_do_not_use_the_table():
    with pytest.raises(TargetError, match="unknown class"):
        parse_target("n02123045", ["cat", "dog"])
    assert parse_target("DOG", ["cat", "dog"]) == 1


def test_random_weights_one_way():
    from camscope.models import load_model, random_architecture
    from camscope.run.testing import random_model

    state = torch.get_rng_state()
    a = random_architecture("resnet18", num_classes=1000)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state untouched
    b = random_model("resnet18").model
    c = load_model("resnet18", pretrained=False).model
    for (name, x), y, z in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y) and torch.equal(x, z), name
