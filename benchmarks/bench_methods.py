"""Time camscope against pytorch-grad-cam on the same model, image, device and threads.

Both libraries run in this one process, back to back, after a warm-up; the script prints
seconds per image for each method, the speed-up, and the agreement of the maps (so speed is
never bought with a different answer):

* ``raw``: camscope's feature-resolution map put through pytorch-grad-cam's own
  post-processing (min-max, resize, min-max again) against pytorch-grad-cam's output — same formula,
  same post-processing, so the max abs difference should be ~1e-6;
* ``final``: camscope's final map (resize, then min-max) against pytorch-grad-cam's output.

``--family`` times every registered method that pytorch-grad-cam also has (same model, layer,
image and target, in this process), with the ratio camscope/pytorch-grad-cam and each gradient
method's time relative to camscope's Grad-CAM.

Usage (see BENCHMARKS.md for recorded results)::

    python benchmarks/bench_methods.py --family --model efficientnet_lite0
    python benchmarks/bench_methods.py --model resnet50 --layer "layer4[-1]"
    python benchmarks/bench_methods.py --model resnet18 --methods dff --threads 1 --repeats 5
    python benchmarks/bench_methods.py --model efficientnet_lite0 --methods scorecam \
        --scorecam-modes fp32,bf16,k128,k256 --skip-pgc

Needs the ``bench`` extra (``pip install ".[bench]"``) for pytorch-grad-cam.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from camscope.io import preprocess  # noqa: E402
from camscope.layers import resolve_layer  # noqa: E402
from camscope.methods import METHODS, AblationCAM, GradCAM, ScoreCAM, build_cam  # noqa: E402
from camscope.models import load_model  # noqa: E402


def build_model(name: str, device: torch.device) -> tuple[torch.nn.Module, tuple, tuple, str]:
    """ResNets with random weights (fine for timing); the bundled Lite0 with real weights."""
    if name == "efficientnet_lite0":
        loaded = load_model(name, device=device)
        return loaded.model, loaded.mean, loaded.std, loaded.weights_source
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval().to(device)
    return model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "random init (seed 0)"


def load_input(path: str | None, mean, std, device) -> torch.Tensor:
    from PIL import Image

    if path:
        image = Image.open(path).convert("RGB")
    else:
        import skimage.data

        image = Image.fromarray(skimage.data.chelsea())
    _, tensor = preprocess(image, size=(224, 224), mean=mean, std=std)
    return tensor[None].to(device)


WARMUP = True


def timed(fn, device: torch.device, repeats: int, stat=np.median) -> tuple[float, object]:
    """``stat`` (median) seconds of ``repeats`` calls after one warm-up call (unless
    ``--no-warmup``)."""
    out = fn() if WARMUP else None
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(stat(times)), out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def pgc_postprocess(raw: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_cam_image

    # pytorch-grad-cam 1.5 scales twice: per layer (min-max, resize), then once more after
    # aggregating the layers (min-max of the resized map)
    return scale_cam_image(scale_cam_image(raw.detach().cpu().numpy().astype(np.float32), size))


#: registry name -> (pytorch-grad-cam class, camscope options giving pytorch-grad-cam's formula)
PGC_EQUIVALENTS = {
    "gradcam": ("GradCAM", {}),
    "gradcampp": ("GradCAMPlusPlus", {}),
    "xgradcam": ("XGradCAM", {}),
    "hirescam": ("HiResCAM", {}),
    "gradcam-elementwise": ("GradCAMElementWise", {}),
    "layercam": ("LayerCAM", {}),
    "fullgrad": ("FullGrad", {}),
    "eigencam": ("EigenCAM", {}),
    "eigengradcam": ("EigenGradCAM", {}),
    "ablationcam": ("AblationCAM", {"ablation_value": "pytorch-grad-cam"}),
    "scorecam": ("ScoreCAM", {"variant": "pytorch-grad-cam"}),
    "random": ("RandomCAM", {}),
    # the methods pytorch-grad-cam 1.5.7 has beyond these (issue 16): see `pgc_map`
    "shapleycam": ("ShapleyCAM", {}),
    "finercam": ("FinerCAM", {}),
    "fem": ("FEM", {}),
    "kpcacam": ("KPCA_CAM", {}),
    "segeigencam": ("SegEigenCAM", {}),
    "refinecam": ("RefineCAM", {}),
    "sess": ("SESS", {}),
    "guidedbackprop": ("GuidedBackpropReLUModel", {}),
    "guidedgradcam": ("GuidedBackpropReLUModel", {}),
}
#: the layers RefineCAM multiplies (pytorch-grad-cam's README uses several stages)
REFINE_LAYERS = {
    "resnet": ["layer2", "layer3", "layer4[-1]"],
    "efficientnet_lite0": ["blocks.3", "blocks.5", "bn2"],
}


def method_layers(model_name: str, name: str, layer_name: str) -> list[str]:
    """The layers a method runs on in the benchmark (RefineCAM: several)."""
    if name != "refinecam":
        return [layer_name]
    key = "resnet" if model_name.startswith("resnet") else model_name
    return REFINE_LAYERS.get(key, [layer_name])


def pgc_map(pgc, target_cls, name, model, modules, x, target):
    """A function computing pytorch-grad-cam's (H, W) map of ``name`` the way its docs call it.

    FinerCAM: ``targets=None`` (pytorch-grad-cam compares only then; the target is the top-1
    class here anyway). Guided back-propagation: its ``GuidedBackpropReLUModel`` on a copy of
    the model (it swaps the ReLU modules), reduced to one channel as camscope does (max |.| over
    colour channels); Guided Grad-CAM: its README's ``cam_mask * gb``, reduced the same way.
    """
    import copy

    cls_name = PGC_EQUIVALENTS[name][0]
    if name in ("guidedbackprop", "guidedgradcam"):
        guided = pgc.GuidedBackpropReLUModel(copy.deepcopy(model), x.device)

        def theirs():
            gb = guided(x.clone(), target)
            if name == "guidedgradcam":
                with pgc.GradCAM(model=model, target_layers=modules) as cam:
                    gb = cam(input_tensor=x, targets=[target_cls(target)])[0][..., None] * gb
            return np.abs(gb).max(axis=-1)

        return theirs
    targets = None if name == "finercam" else [target_cls(target)]

    def theirs():
        cam = getattr(pgc, cls_name)(model=model, target_layers=modules)
        out = cam(input_tensor=x, targets=targets)[0]
        if hasattr(cam, "__exit__"):  # its RefineCAM has no context manager
            cam.__exit__(None, None, None)
        return out

    return theirs


#: methods whose pytorch-grad-cam run takes minutes on a CPU: timed once, without warm-up
SLOW = {"ablationcam", "scorecam"}


def timed_interleaved(
    fns, device: torch.device, repeats: int, clock=time.perf_counter
) -> list[tuple[float, object]]:
    """Minimum seconds of each function over ``repeats`` rounds that call them in turn.

    One warm-up round first. Interleaving puts every function under the same machine load,
    which on a shared CPU drifts by more than the differences measured. ``clock``:
    ``time.perf_counter`` (wall) or ``time.process_time`` (this process's CPU time, all
    threads: far less sensitive to other processes on the machine).
    """
    outs = [fn() for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            outs[k] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(clock() - start)
    return [(min(t), o) for t, o in zip(times, outs, strict=True)]


def family(args, model, module, layer_name, x, target, device) -> list[dict]:
    """Every method pytorch-grad-cam also has: seconds, ratio, agreement, vs Grad-CAM.

    camscope, pytorch-grad-cam and (for gradient methods) camscope's Grad-CAM are called in
    turn, ``--repeats`` rounds after a warm-up, and each gets its minimum (the least disturbed
    run on a shared machine). The slow pytorch-grad-cam runs (AblationCAM, ScoreCAM) run once.
    """
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    size = tuple(x.shape[-2:])
    names = [n for n in PGC_EQUIVALENTS if n in METHODS]
    if args.methods:
        names = [n for n in names if n in args.methods.split(",")]
    rows = []
    with build_cam("gradcam", model, layer_name) as gradcam:
        for name in names:
            rows.append(_family_row(args, pgc, ClassifierOutputTarget, name, model, module,
                                    layer_name, x, target, device, gradcam, size))  # fmt: skip
            print(json.dumps(rows[-1]))
            sys.stdout.flush()
    return rows


def gradient_ratio(args, model, module, layer_name, x, target, device) -> list[dict]:
    """Each gradient method's CPU time over camscope's Grad-CAM's, called in turn (min of rounds).

    CPU time of this process (``time.process_time``), not wall time: on a machine shared with
    other jobs the wall time of one call varies by more than the differences measured here.
    """
    names = [n for n, s in METHODS.items() if s.family == "gradient"]
    cams = [build_cam(n, model, layer_name) for n in names]
    fns = [lambda cam=cam: cam.explain(x, target) for cam in cams]
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    timings = timed_interleaved(fns, device, args.repeats, clock)
    base = timings[names.index("gradcam")][0]
    rows = []
    for name, (seconds, _) in zip(names, timings, strict=True):
        rows.append({"model": args.model, "layer": layer_name, "method": name,
                     "camscope_cpu_s": seconds, "vs_camscope_gradcam": seconds / base})  # fmt: skip
        print(json.dumps(rows[-1]))
    for cam in cams:
        cam.close()
    return rows


def _family_row(args, pgc, target_cls, name, model, module, layer_name, x, target, device,
                gradcam, size) -> dict:  # fmt: skip
    options = PGC_EQUIVALENTS[name][1]
    gradient = METHODS[name].family == "gradient"
    layers = method_layers(args.model, name, layer_name)
    modules = [module] if layers == [layer_name] else [resolve_layer(model, n)[1] for n in layers]
    theirs = pgc_map(pgc, target_cls, name, model, modules, x, target)

    with build_cam(name, model, layers, **options) as cam:
        ours = lambda: cam.explain(x, target)  # noqa: E731
        if name in SLOW:
            ((ours_s, res),) = timed_interleaved([ours], device, 1)
            start = time.perf_counter()
            their_map = theirs()
            theirs_s, gradcam_s = time.perf_counter() - start, None
        else:
            fns = [ours, theirs] + ([lambda: gradcam.explain(x, target)] if gradient else [])
            timings = timed_interleaved(fns, device, args.repeats)
            (ours_s, res), (theirs_s, their_map) = timings[:2]
            gradcam_s = timings[2][0] if gradient else None
    if name == "refinecam":  # a product of maps: compare the final maps
        r = pearson(res.maps[0].cpu().numpy(), their_map)
    else:
        r = pearson(pgc_postprocess(res.raw, size)[0], their_map)
    return {
        "model": args.model, "layer": ",".join(layers), "method": name,
        "family": METHODS[name].family, "camscope_s": ours_s, "pgc_s": theirs_s,
        "ratio_camscope_over_pgc": ours_s / theirs_s,
        "gradcam_s": gradcam_s,
        "vs_camscope_gradcam": ours_s / gradcam_s if gradcam_s else None,
        "pearson_same_postprocessing": r,
        "note": "sign free (SVD)" if name.startswith("eigen") else
        ("random weights differ" if name == "random" else ""),
    }  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="store_true", help="every method pgc also has")
    parser.add_argument(
        "--gradient-ratio",
        action="store_true",
        help="camscope only: every gradient method and Grad-CAM in turn, min of --repeats rounds",
    )
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--layer", default=None)
    parser.add_argument(
        "--methods", default=None, help="comma list (default: gradcam,ablationcam,scorecam; all)"
    )
    parser.add_argument(
        "--scorecam-modes",
        default="fp32",
        help="comma list of fp32, bf16, fp16, kNNN (max channels NNN)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--image", default=None)
    parser.add_argument("--skip-pgc", default="", help="comma list of methods not to run in pgc")
    parser.add_argument(
        "--pgc-batch-size",
        type=int,
        default=None,
        help="pytorch-grad-cam ScoreCAM batch (default: its own, 16)",
    )
    parser.add_argument(
        "--variants",
        default="pytorch-grad-cam,reference",
        help="ScoreCAM variants to time (pytorch-grad-cam is the one compared with pgc)",
    )
    parser.add_argument("--json", default=None, help="append the results as one JSON line")
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="time camscope's first call too (one-off set-up such as the engine build included)",
    )
    return parser.parse_args()


class Bench:
    """Model, layer, input and target of one run; collects the result rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        torch.set_num_threads(args.threads)
        self.args = args
        self.device = torch.device(args.device)
        self.model, mean, std, self.source = build_model(args.model, self.device)
        layer = args.layer or ("layer4[-1]" if args.model.startswith("resnet") else "bn2")
        self.layer_name, self.module = resolve_layer(self.model, layer)
        self.x = load_input(args.image, mean, std, self.device)
        self.size = tuple(self.x.shape[-2:])
        with torch.no_grad():
            self.target = int(self.model(self.x).argmax())
        self.skip = set(filter(None, args.skip_pgc.split(",")))
        self.results: list[dict] = []
        self.pgc = None
        self.pgc_targets = None

    def print_header(self) -> None:
        args, device = self.args, self.device
        print(
            f"# {args.model} ({self.source}) layer {self.layer_name}, device {device} "
            f"({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor()}), "
            f"threads {torch.get_num_threads()}, torch {torch.__version__}, target {self.target}"
        )

    def import_pgc(self, methods: list[str]) -> None:
        if any(m not in self.skip for m in methods):
            import pytorch_grad_cam as pgc
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            self.pgc = pgc
            self.pgc_targets = [ClassifierOutputTarget(self.target)]

    def run_pgc(self, cls, **kwargs):
        with cls(model=self.model, target_layers=[self.module], **kwargs) as cam:
            if self.args.pgc_batch_size and hasattr(cam, "get_cam_weights"):
                cam.batch_size = self.args.pgc_batch_size
            return cam(input_tensor=self.x, targets=self.pgc_targets)[0]

    def timed_ours(self, cam) -> tuple[float, object]:
        return timed(lambda: cam.explain(self.x, self.target), self.device, self.args.repeats)

    def record(self, method, mode, ours_s, theirs_s, ours_raw, ours_map, theirs_map, extra=None):
        row = {
            "model": self.args.model,
            "layer": self.layer_name,
            "method": method,
            "mode": mode,
            "device": str(self.device),
            "camscope_s": ours_s,
            "pgc_s": theirs_s,
            "speedup": (theirs_s / ours_s) if theirs_s else None,
        }
        if theirs_map is not None:
            same_post = pgc_postprocess(ours_raw, self.size)[0]
            row["maxabs_same_postprocessing"] = float(np.abs(same_post - theirs_map).max())
            row["pearson_same_postprocessing"] = pearson(same_post, theirs_map)
            row["pearson_final"] = pearson(ours_map, theirs_map)
        row.update(extra or {})
        self.results.append(row)
        print(json.dumps(row))
        sys.stdout.flush()


def bench_gradcam(b: Bench) -> None:
    with GradCAM(b.model, b.layer_name) as cam:
        ours_s, res = b.timed_ours(cam)
    theirs_s = theirs = None
    if "gradcam" not in b.skip:
        theirs_s, theirs = timed(lambda: b.run_pgc(b.pgc.GradCAM), b.device, b.args.repeats)
    b.record("gradcam", "fp32", ours_s, theirs_s, res.raw, res.maps[0].cpu().numpy(), theirs)


def bench_ablationcam(b: Bench) -> None:
    with AblationCAM(b.model, b.layer_name) as cam:
        ours_s, res = b.timed_ours(cam)
        note = cam.runner.note
    theirs_s = theirs = None
    if "ablationcam" not in b.skip:
        # pgc's AblationCAM: no warm-up repeat (minutes per call on CPU)
        start = time.perf_counter()
        theirs = b.run_pgc(b.pgc.AblationCAM)
        theirs_s = time.perf_counter() - start
    b.record(
        "ablationcam",
        "fp32",
        ours_s,
        theirs_s,
        res.raw,
        res.maps[0].cpu().numpy(),
        theirs,
        {"runner": note},
    )


def time_pgc_scorecam(b: Bench) -> tuple[float | None, np.ndarray | None]:
    theirs_s = theirs = None
    if "scorecam" not in b.skip:
        start = time.perf_counter()
        theirs = b.run_pgc(b.pgc.ScoreCAM)
        if b.device.type == "cuda":
            torch.cuda.synchronize()
        theirs_s = time.perf_counter() - start
    return theirs_s, theirs


def scorecam_mode_kwargs(mode: str) -> dict:
    kwargs: dict = {}
    if mode.startswith("k"):
        kwargs["max_channels"] = int(mode[1:])
    elif mode in ("bf16", "fp16"):
        kwargs["precision"] = mode
    return kwargs


def time_scorecam_variants(b: Bench, variants: list[str], kwargs: dict) -> tuple[dict, dict, str]:
    timings, outputs = {}, {}
    for variant in variants:
        with ScoreCAM(b.model, b.layer_name, variant=variant, **kwargs) as cam:
            timings[variant], outputs[variant] = timed(
                lambda cam=cam: cam.explain(b.x, b.target), b.device, b.args.repeats
            )
            engine = cam.engine.kind
    return timings, outputs, engine


def bench_scorecam(b: Bench) -> None:
    theirs_s, theirs = time_pgc_scorecam(b)
    exact_map = None
    for mode in b.args.scorecam_modes.split(","):
        kwargs = scorecam_mode_kwargs(mode)
        # compare with pgc on its own formula; agreement with our exact map for fast modes
        variants = b.args.variants.split(",")
        timings, outputs, engine = time_scorecam_variants(b, variants, kwargs)
        agree = "reference" if "reference" in outputs else variants[0]
        res = outputs.get("pytorch-grad-cam", outputs[agree])
        ours_s = timings.get("pytorch-grad-cam", timings[agree])
        ref = outputs[agree]
        ref_map = ref.maps[0].cpu().numpy()
        if mode == "fp32":
            exact_map = ref_map
        extra = {
            "reference_variant_s": timings.get("reference"),
            "camscope_variant": "pytorch-grad-cam" if "pytorch-grad-cam" in outputs else agree,
            "agreement_variant": agree,
            "engine": engine,
            "channels_run": ref.info.get("channels_run"),
            "constant_channels": ref.info.get("constant_channels"),
            "duplicate_channels": ref.info.get("duplicate_channels"),
        }
        if exact_map is not None:
            extra["pearson_vs_exact"] = pearson(ref_map, exact_map)
        b.record(
            "scorecam",
            mode,
            ours_s,
            theirs_s,
            res.raw,
            res.maps[0].cpu().numpy(),
            theirs,
            extra,
        )


def bench_dff(b: Bench) -> None:
    """Deep Feature Factorization (5 concepts) in both libraries, in turn; r = the worst concept."""
    from camscope.methods import DeepFeatureFactorization

    ours = DeepFeatureFactorization(b.model, b.module)
    theirs = b.pgc.DeepFeatureFactorization(b.model, b.module)
    fns = [lambda: ours(b.x, 5), lambda: theirs(b.x, 5)]
    (ours_s, mine), (theirs_s, their) = timed_interleaved(fns, b.device, b.args.repeats)
    r = min(pearson(m, t) for m, t in zip(mine[1][0], their[1][0], strict=True))
    row = {"model": b.args.model, "layer": b.layer_name, "method": "dff", "camscope_s": ours_s,
           "pgc_s": theirs_s, "ratio_camscope_over_pgc": ours_s / theirs_s,
           "pearson_worst_concept": r,
           "concepts_max_abs": float(np.abs(mine[0] - their[0]).max())}  # fmt: skip
    b.results.append(row)
    print(json.dumps(row))


def append_json(path: str | None, rows: list[dict]) -> None:
    if path:
        with open(path, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


def main() -> None:
    args = parse_args()
    global WARMUP
    WARMUP = not args.no_warmup

    b = Bench(args)
    b.print_header()
    if args.family or args.gradient_ratio:
        run = gradient_ratio if args.gradient_ratio else family
        results = run(args, b.model, b.module, b.layer_name, b.x, b.target, b.device)
        append_json(args.json, results)
        return

    methods = (args.methods or "gradcam,ablationcam,scorecam").split(",")
    b.import_pgc(methods)
    if "gradcam" in methods:
        bench_gradcam(b)
    if "ablationcam" in methods:
        bench_ablationcam(b)
    if "scorecam" in methods:
        bench_scorecam(b)
    if "dff" in methods:
        bench_dff(b)
    append_json(args.json, b.results)


if __name__ == "__main__":
    main()
