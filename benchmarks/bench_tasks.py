"""Seconds per image of camscope's task adapters (issue 14), one thread, random weights.

Times are CPU seconds of the process (``time.process_time``) with one torch thread, so they do
not depend on other processes sharing the machine. Models are the real architectures at their
usual sizes, built from configs with random weights (timing does not depend on the weights):
Hugging Face ViT-B/16 and Swin-T classifiers, torchvision Faster R-CNN R50-FPN (one map per
object) and DeepLabV3-R50, Hugging Face CLIP ViT-B/32 (one map per prompt). Each timing is the
median of ``--repeats`` calls after a warm-up call; pytorch-grad-cam 1.5.7's recipe on the same
model and input where it has one.

    OMP_NUM_THREADS=1 python benchmarks/bench_tasks.py --repeats 1 --objects 2
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def _time(fn, repeats: int) -> float:
    """Median CPU seconds of this process per call (one thread: CPU time = compute time,
    unaffected by other processes sharing the machine), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


def hf_classifiers(repeats: int) -> list[tuple]:
    import pytorch_grad_cam as pgc
    import transformers as T
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from camscope import GradCAM

    rows = []
    torch.manual_seed(0)
    vit = T.ViTForImageClassification(T.ViTConfig(num_labels=1000)).eval()
    swin = T.SwinForImageClassification(T.SwinConfig(num_labels=1000)).eval()
    x = torch.randn(1, 3, 224, 224)

    def tokens(prefix, grid):
        return lambda t: t[:, prefix:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)

    for name, model, layer, reshape in (
        ("HF ViT-B/16, 224", vit, vit.vit.layers[-1].layernorm_before, tokens(1, 14)),
        ("HF Swin-T, 224", swin, swin.swin.layernorm, tokens(0, 7)),
    ):
        cam = GradCAM(model, target_layers=None)
        ours = _time(lambda cam=cam: cam(x, targets=[3]), repeats)
        theirs_cam = pgc.GradCAM(_Logits(model), [layer], reshape_transform=reshape)
        target = [ClassifierOutputTarget(3)]
        theirs = _time(lambda c=theirs_cam, t=target: c(x, targets=t), repeats)
        rows.append(("classify", name, "gradcam", ours, theirs))
    return rows


def detection(repeats: int, objects: int) -> list[tuple]:
    import pytorch_grad_cam as pgc
    import torchvision.models.detection as tvd
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from camscope.tasks.detection import explain_detections

    torch.manual_seed(0)
    det = tvd.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=480, max_size=640
    ).eval()
    image = torch.rand(3, 480, 640)
    rows = []
    for method, cls in (("gradcam", pgc.GradCAM), ("eigencam", pgc.EigenCAM)):
        run = lambda m=method: explain_detections(  # noqa: E731
            det, image, method=m, score_threshold=0.0, max_objects=objects
        )
        ours = _time(run, repeats)
        found = run().detections

        def theirs_fn(cls=cls, found=found):
            with cls(det, [det.backbone.body.layer4]) as cam:
                for obj in found:
                    cam(
                        image[None],
                        targets=[FasterRCNNBoxScoreTarget([obj.label], [torch.tensor(obj.box)])],
                    )

        theirs = _time(theirs_fn, repeats) if method == "gradcam" else None
        label = f"Faster R-CNN R50-FPN, 480x640 (min_size 480), {objects} objects"
        rows.append(("detect", label, method, ours, theirs))
    return rows


def segmentation(repeats: int) -> list[tuple]:
    import pytorch_grad_cam as pgc
    import torchvision.models.segmentation as tvs
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from camscope.tasks.segmentation import explain_segmentation

    torch.manual_seed(0)
    net = tvs.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21).eval()
    image = torch.randn(3, 520, 520)
    with torch.no_grad():
        pred = net(image[None])["out"][0].argmax(0)
    category = int(pred.flatten().mode().values)
    ours = _time(lambda: explain_segmentation(net, image, category), repeats)

    class Out(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)["out"]

    mask = (pred == category).float().numpy()
    cam = pgc.GradCAM(Out(net), [net.backbone.layer4])
    target = [SemanticSegmentationTarget(category, mask)]
    theirs = _time(lambda: cam(image[None], targets=target), repeats)
    return [("segment", "DeepLabV3-R50, 520x520", "gradcam", ours, theirs)]


def clip(repeats: int) -> list[tuple]:
    import transformers as T

    from camscope.tasks.prompts import explain_prompts

    torch.manual_seed(0)
    config = T.CLIPConfig(vision_config={"patch_size": 32})
    model = T.CLIPModel(config).eval()
    image = torch.randn(3, 224, 224)

    def tokenizer(prompts, padding=True, return_tensors="pt"):
        ids = torch.tensor([[49406] + [400 + i] * 6 + [49407] for i in range(len(prompts))])
        return {"input_ids": ids}

    prompts = ["a photo of a cat", "a photo of a dog", "a diagram"]
    ours = _time(lambda: explain_prompts(model, image, prompts, tokenizer=tokenizer), repeats)
    return [("prompts", "HF CLIP ViT-B/32, 224, 3 prompts", "gradcam", ours, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objects", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| task | model, input | method | camscope s/image | pytorch-grad-cam s/image |")
    print("| --- | --- | --- | --- | --- |", flush=True)
    steps = (hf_classifiers, segmentation, clip, lambda r: detection(r, args.objects))
    for step in steps:
        for task, model, method, ours, theirs in step(args.repeats):
            shown = f"{theirs:.2f}" if theirs is not None else "-"
            print(f"| {task} | {model} | {method} | {ours:.2f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
