"""Tiny random-weight task models for the run tests, as ``--model tests.task_models:NAME``.

Nothing is downloaded: torchvision detectors and segmenters with ``weights=None,
weights_backbone=None`` and a few classes, a tiny Hugging Face CLIP with a character tokenizer.
"""

from __future__ import annotations

import torch


def detector():
    """Faster R-CNN (MobileNetV3-FPN), 3 classes, 96-pixel inputs, seeded random weights."""
    import torchvision.models.detection as tvd

    torch.manual_seed(0)
    model = tvd.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=96, max_size=96
    )
    return {"model": model.eval(), "categories": ["background", "cat", "dog"]}


def segmenter():
    """LR-ASPP (MobileNetV3), 3 classes, 64-pixel inputs, seeded random weights."""
    import torchvision.models.segmentation as tvs

    torch.manual_seed(0)
    model = tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    cats = ["background", "cat", "dog"]
    return {"model": model.eval(), "categories": cats, "input_size": (64, 64)}


def char_tokenizer(prompts, padding=True, return_tensors="pt"):
    """A stand-in tokenizer (character codes): no vocabulary files."""
    width = max(len(p) for p in prompts) + 1
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor([ord(c) % 98 + 1 for c in p])
        ids[i, len(p)] = 99  # eos (the highest id: pooled position)
    return {"input_ids": ids}


def clip():
    """A tiny Hugging Face CLIPModel (32-pixel images) with `char_tokenizer`."""
    import transformers

    text = {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 32,
        "eos_token_id": 99, "bos_token_id": 0, "pad_token_id": 0,
    }  # fmt: skip
    vision = {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "image_size": 32, "patch_size": 4,
    }  # fmt: skip
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    return {"model": transformers.CLIPModel(config).eval(), "tokenizer": char_tokenizer}


def detr():
    """A tiny Hugging Face DETR (ResNet backbone built from its config), 64-pixel inputs."""
    import transformers

    backbone = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1],
        out_features=["stage4"],
    )  # fmt: skip
    config = transformers.DetrConfig(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10,
        num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    return {"model": transformers.DetrForObjectDetection(config).eval(), "input_size": (64, 64)}


def segformer():
    """A tiny Hugging Face SegFormer, 64-pixel inputs."""
    import transformers

    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
        decoder_hidden_size=32, num_labels=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    return {"model": model, "input_size": (64, 64)}
