"""CLIP-style models: the target is a text prompt; several prompts give several maps.

`prompt_classifier` turns a CLIP model and P prompts into a classifier over the prompts: the
logits are CLIP's own image-text similarities, ``exp(logit_scale) * cos(image, text_p)``
(``logits_per_image``), with the text embeddings computed once. Explaining prompt p is then
explaining class p, so every method applies; the layer and the token reshape are chosen
automatically: the input norm of the vision tower's last block (the image embedding reads the
class token of the last block, whose patch tokens therefore get no gradient; pytorch-grad-cam's
CLIP tutorial uses the same ``vision_model.encoder.layers[-1].layer_norm1``).

Models: Hugging Face ``CLIPModel`` (``get_image_features`` / ``get_text_features``; its
tokenizer is read from the model's folder, local files only, unless given) and open-clip
``CLIP`` (``encode_image`` / ``encode_text``; its bundled tokenizer).

Example::

    >>> result = explain_prompts(clip, image, ["a photo of a cat", "a photo of a dog"])
    ...                                                                   # doctest: +SKIP
    >>> result.maps.shape, result.probs                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camscope.layers import LayerError, resolve_layer
from camscope.methods.registry import build_cam

__all__ = ["PromptExplanation", "default_prompt_layer", "explain_prompts", "prompt_classifier"]


@dataclass
class PromptExplanation:
    """One map per prompt.

    Attributes:
        prompts: the P prompts, in the order of ``maps``.
        maps: (P, H, W) float32 in [0, 1] at the input size.
        raw: (P, h, w) float32 at the layer's resolution.
        empty: (P,) bool, maps without spatial variation.
        logits: (P,) the image-text similarity logits of the input.
        probs: (P,) their softmax over the prompts.
        layer, method: what was explained where.
        notes: substitutions (e.g. the whole network re-run per re-evaluation).
    """

    prompts: list[str]
    maps: torch.Tensor
    raw: torch.Tensor
    empty: torch.Tensor
    logits: torch.Tensor
    probs: torch.Tensor
    layer: str
    method: str
    notes: list[str] = field(default_factory=list)


def _is_open_clip(model: nn.Module) -> bool:
    return hasattr(model, "encode_image") and hasattr(model, "encode_text")


def _features(value: Any) -> torch.Tensor:
    """Projected features: transformers 4 returns them, 5 returns them as ``pooler_output``."""
    return value if isinstance(value, torch.Tensor) else value.pooler_output


def _tokens(model: nn.Module, prompts: Sequence[str], tokenizer: Callable | None) -> dict:
    if tokenizer is None and _is_open_clip(model):
        import open_clip

        tokenizer = open_clip.tokenize
    if tokenizer is None:
        from transformers import AutoTokenizer

        folder = getattr(model.config, "_name_or_path", "") or getattr(model, "name_or_path", "")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(
                "no tokenizer next to the model; pass tokenizer= (e.g. the CLIP processor's)"
            ) from exc
    encoded = tokenizer(list(prompts)) if _is_open_clip(model) else None
    if encoded is None:
        encoded = tokenizer(list(prompts), padding=True, return_tensors="pt")
    return {"input_ids": encoded} if isinstance(encoded, torch.Tensor) else dict(encoded)


class _PromptClassifier(nn.Module):
    """Images -> (N, P) CLIP similarity logits; the model's own layer names."""

    def __init__(self, model: nn.Module, text: torch.Tensor) -> None:
        super().__init__()
        object.__setattr__(self, "inner", model)
        self._modules = model._modules
        self._parameters, self._buffers = model._parameters, model._buffers
        self.training = model.training
        object.__setattr__(self, "text", text)  # (P, D) unit text embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if _is_open_clip(self.inner):
            image = self.inner.encode_image(x)
        else:
            image = _features(self.inner.get_image_features(pixel_values=x))
        image = image / image.norm(dim=-1, keepdim=True)
        return self.inner.logit_scale.exp() * image @ self.text.to(image).T


def prompt_classifier(
    model: nn.Module, prompts: Sequence[str], tokenizer: Callable | None = None
) -> nn.Module:
    """A CLIP model as a classifier over ``prompts`` (see the module docstring)."""
    if not prompts:
        raise ValueError("give at least one text prompt")
    tokens = _tokens(model, prompts, tokenizer)
    with torch.no_grad():
        if _is_open_clip(model):
            text = model.encode_text(tokens["input_ids"])
        else:
            text = _features(model.get_text_features(**tokens))
    text = text / text.norm(dim=-1, keepdim=True)
    return _PromptClassifier(model, text.detach()).eval()


def default_prompt_layer(model: nn.Module) -> str:
    """The vision tower's last block's input norm (HF ``layer_norm1``, open-clip ``ln_1``).

    open-clip's ResNet towers (ModifiedResNet): ``visual.layer4``.
    """
    modules = dict(model.named_modules())
    for blocks, norm in (
        ("vision_model.encoder.layers", "layer_norm1"),
        ("visual.transformer.resblocks", "ln_1"),
    ):
        if blocks in modules:
            return f"{blocks}.{len(modules[blocks]) - 1}.{norm}"
    if "visual.layer4" in modules:
        return "visual.layer4"
    raise LayerError("no default layer known for this CLIP model; pass layer=")


def explain_prompts(
    model: nn.Module,
    image: torch.Tensor,
    prompts: str | Sequence[str],
    *,
    tokenizer: Callable | None = None,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    **options: Any,
) -> PromptExplanation:
    """One map per text prompt for ``image`` (3, H, W), normalised as the model expects.

    Args:
        model: a Hugging Face ``CLIPModel`` or an open-clip ``CLIP``, in eval mode.
        image: (3, H, W) or (1, 3, H, W).
        prompts: one prompt or several.
        tokenizer: turns prompts into token ids (default: the model's own, local files only).
        method: any registered method.
        layer: the CAM layer (default `default_prompt_layer`).
        **options: the method's options.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    x = (image[None] if image.dim() == 3 else image[:1]).detach()
    classifier = prompt_classifier(model, prompts, tokenizer)
    name, _ = resolve_layer(classifier, default_prompt_layer(model) if layer is None else layer)
    cam = build_cam(method, classifier, [name], **options)
    try:  # one batch: the image once per prompt, prompt p explained in row p
        result = cam.explain(x.expand(len(prompts), -1, -1, -1), targets=list(range(len(prompts))))
    finally:
        cam.close()
    logits = result.logits[0]
    return PromptExplanation(
        prompts,
        result.maps,
        result.raw,
        result.empty,
        logits,
        logits.softmax(-1),
        name,
        cam.name,
        list(dict.fromkeys(cam.notes)),
    )
