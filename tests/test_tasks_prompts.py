"""CLIP-style models: a map per text prompt; Hugging Face CLIP and open-clip, tiny configs.

The similarity logits are checked against CLIP's own ``logits_per_image`` (HF) and a by-hand
cosine (open-clip); Grad-CAM against pytorch-grad-cam's CLIP recipe (its wrapper returning
``logits_per_image`` and a reshape_transform dropping the class token).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from task_models import char_tokenizer

from camscope.tasks.prompts import default_prompt_layer, explain_prompts, prompt_classifier

pytestmark = pytest.mark.usefixtures("single_thread")

PROMPTS = ["a photo of a cat", "a photo of a dog", "a diagram"]


@pytest.fixture(scope="module")
def hf_clip():
    transformers = pytest.importorskip("transformers")
    text = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 100,
        "max_position_embeddings": 32,
        "eos_token_id": 99,
        "bos_token_id": 0,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 4,
    }
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    return transformers.CLIPModel(config).eval()


@pytest.fixture(scope="module")
def open_clip_model():
    open_clip = pytest.importorskip("open_clip")
    vision = open_clip.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=4, image_size=32)
    text = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
    torch.manual_seed(0)
    return open_clip.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text).eval()


def _image(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_hf_clip_logits_are_clips_own(hf_clip):
    x = _image()[None]
    ours = prompt_classifier(hf_clip, PROMPTS, char_tokenizer)(x)
    with torch.no_grad():
        theirs = hf_clip(pixel_values=x, **char_tokenizer(PROMPTS)).logits_per_image
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_hf_clip_one_map_per_prompt_and_pytorch_grad_cam(hf_clip):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    image = _image(1)
    result = explain_prompts(hf_clip, image, PROMPTS, tokenizer=char_tokenizer)
    assert result.layer == "vision_model.encoder.layers.1.layer_norm1"
    assert result.layer == default_prompt_layer(hf_clip)
    assert result.maps.shape == (3, 32, 32) and not result.empty.any()
    assert torch.allclose(result.probs.sum(), torch.tensor(1.0))

    class ImageClassifier(torch.nn.Module):  # pytorch-grad-cam's CLIP tutorial wrapper
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            tokens = char_tokenizer(PROMPTS)
            return self.model(pixel_values=x, **tokens).logits_per_image

    def reshape(x):  # class token dropped, 8x8 patches
        return x[:, 1:, :].reshape(x.shape[0], 8, 8, x.shape[2]).permute(0, 3, 1, 2)

    layer = hf_clip.vision_model.encoder.layers[-1].layer_norm1
    with pgc.GradCAM(ImageClassifier(hf_clip), [layer], reshape_transform=reshape) as cam:
        compared = 0
        for p in range(3):
            theirs = cam(image[None], targets=[ClassifierOutputTarget(p)])[0]
            if theirs.max() > 0:
                assert _pearson(result.maps[p], theirs) >= 0.999, p
                compared += 1
    assert compared, "nothing compared"


def test_open_clip_prompts(open_clip_model):
    import open_clip

    image = _image(2)
    result = explain_prompts(open_clip_model, image, PROMPTS)
    assert result.layer == "visual.transformer.resblocks.1.ln_1"
    assert result.maps.shape == (3, 32, 32) and not result.empty.any()
    with torch.no_grad():  # by hand: scaled cosine of CLIP's own embeddings
        img = open_clip_model.encode_image(image[None])
        txt = open_clip_model.encode_text(open_clip.tokenize(PROMPTS))
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        expected = (open_clip_model.logit_scale.exp() * img @ txt.T)[0]
    assert torch.allclose(result.logits, expected, atol=1e-5)
    one = explain_prompts(open_clip_model, image, "a photo of a cat")
    assert torch.allclose(one.maps[0], result.maps[0], atol=1e-5)  # a prompt's map alone
