"""``camscope run --task detect | segment | prompt``: per-object rows, maps, overlays, metrics.

The models are tiny and random (tests/task_models.py, ``--model task_models:NAME``); nothing is
downloaded. The run's maps are checked against the task API's (camscope.tasks), deletion against
a by-hand loop over the box score, and resume / shards against an uninterrupted run.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from run_helpers import make_images

from camscope.cli import main
from camscope.io import iter_images, runfolder
from camscope.run import RunConfig, run_local
from camscope.tasks.detection import box_scores, explain_detections
from camscope.tasks.prompts import explain_prompts
from camscope.tasks.segmentation import explain_segmentation

pytestmark = pytest.mark.usefixtures("single_thread")

DETECT = {"task": "detect", "model": "task_models:detector", "score_threshold": 0.0}


def _run(images, out, **kw):
    config = RunConfig(inputs=(str(images),), out_dir=str(out), **{"sanity_images": 0, **kw})
    return run_local(config)


IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
CLIP = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}
UNIT = {"mean": (0.0,) * 3, "std": (1.0,) * 3}


def load_image(path, *, size, mean, std) -> torch.Tensor:
    """The run's decoded tensor of ``path`` (the same resize and normalisation)."""
    return next(iter(iter_images([path], size=size, mean=mean, std=std))).tensor


def _rows(out):
    table = runfolder.read_table([out])
    ok = [r for r in table.to_pylist() if r["status"] == "ok"]
    return sorted(ok, key=lambda r: (r["name"], r["object_index"], r["method"]))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    make_images(folder, n=3)
    return folder


def _detect_config(images, out) -> RunConfig:
    """The detection run of these tests (Grad-CAM and EigenCAM, two objects per image)."""
    return RunConfig(
        inputs=(str(images),),
        out_dir=str(out),
        methods=("gradcam", "eigencam"),
        max_objects=2,
        sanity_images=0,
        **DETECT,
    )


@pytest.fixture(scope="module")
def detected(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "run"
    result = run_local(_detect_config(images, out))
    return out, result


def test_detect_rows_maps_and_overlays(detected, images):
    out, result = detected
    assert result.ok and result.n_explained == 3
    rows = _rows(out)
    assert len(rows) == 3 * 2 * 2  # images x objects x methods
    import task_models

    made = task_models.detector()
    for r in rows:
        assert r["object"] == str(r["object_index"]) and r["box"] is not None
        assert r["target_name"] == made["categories"][r["target_index"]]
        npy = runfolder.map_path(out, r["method"], r["name"], "npy", r["object_index"])
        png = runfolder.map_path(out, r["method"], r["name"], "png", r["object_index"])
        assert npy.is_file() and png.is_file()
    # the map equals the API's for the same decoded image, object by object
    first = rows[0]
    decoded = load_image(images / f"{first['name']}.png", size=(96, 96), **UNIT)
    api = explain_detections(
        made["model"], decoded, method=first["method"], score_threshold=0.0, max_objects=2
    )
    for k in range(2):
        saved = np.load(runfolder.map_path(out, first["method"], first["name"], "npy", k))
        np.testing.assert_allclose(saved, api.maps[k].numpy(), atol=1e-5)
    # the box is in the original image's pixels (64 x 48, decoded at 96 x 96)
    box = api.detections[0].box
    expected = [box[0] * 64 / 96, box[1] * 48 / 96, box[2] * 64 / 96, box[3] * 48 / 96]
    np.testing.assert_allclose(first["box"], expected, rtol=1e-5)
    assert abs(first["object_score"] - api.detections[0].score) < 1e-6


def test_detect_overlay_has_the_box(detected):
    out, _ = detected
    r = _rows(out)[0]
    png = np.asarray(Image.open(runfolder.map_path(out, r["method"], r["name"], "png", 0)))
    x1, y1, x2, y2 = (v * 96 / s for v, s in zip(r["box"], (64, 48, 64, 48), strict=True))
    column = png[int(np.clip(y1, 0, 95)) : int(np.clip(y2, 0, 95)) + 1, int(np.clip(x2, 0, 95))]
    assert (column == 255).all(axis=-1).mean() > 0.5  # the white outline's right edge


def test_detect_predictions_and_resume(detected, images):
    out, _ = detected
    assert runfolder.validate(out) == []  # every per-object map file is where the row says
    lines = (out / runfolder.PREDICTIONS_CSV).read_text().splitlines()
    assert lines[0].startswith("name,file,object_index,object,label,label_name,score,x1")
    assert len(lines) == 1 + 3 * 2
    before = len(runfolder.read_table([out]))
    again = run_local(_detect_config(images, out))
    assert again.n_done_before == 3 and again.n_explained == 0
    assert len(runfolder.read_table([out])) == before


def test_no_detection_is_one_failed_line_and_nothing_written(images, tmp_path, caplog):
    out = tmp_path / "run"
    result = _run(images, out, methods=("gradcam",), **{**DETECT, "score_threshold": 1.0})
    assert result.n_failed == 3 and not result.ok
    lines = [r.getMessage() for r in caplog.records if "no detection scores" in r.getMessage()]
    assert len(lines) == 3
    assert not (out / "gradcam").exists()
    table = runfolder.read_table([out])
    assert set(table.column("status").to_pylist()) == {"failed"}


def test_shards_equal_one_run(images, tmp_path, detected):
    out = tmp_path / "run"
    for i in range(2):
        _run(images, out, methods=("gradcam", "eigencam"), max_objects=2, shard=(i, 2), **DETECT)
    ref, _ = detected
    a, b = _rows(out), _rows(ref)
    assert [(r["name"], r["object"], r["method"]) for r in a] == [
        (r["name"], r["object"], r["method"]) for r in b
    ]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x["raw"], y["raw"], atol=1e-6)


def test_detect_deletion_against_a_loop(images, tmp_path):
    out = tmp_path / "run"
    _run(images, out, methods=("gradcam",), max_objects=1, metrics=True, steps=4, **DETECT)
    r = _rows(out)[0]
    import task_models

    model = task_models.detector()["model"]
    x = load_image(images / f"{r['name']}.png", size=(96, 96), **UNIT)
    saved = np.load(runfolder.map_path(out, "gradcam", r["name"], "npy", 0)).astype(np.float64)
    box = [v * 96 / s for v, s in zip(r["box"], (64, 48, 64, 48), strict=True)]
    score = box_scores(model, [box], [r["target_index"]])
    order = np.argsort(-saved.ravel(), kind="stable")
    curve = []
    for k in range(5):
        keep = np.ones(96 * 96)
        keep[order[: min(k * 2304, 96 * 96)]] = 0  # ceil(96 * 96 / 4) pixels per step
        xk = x * torch.from_numpy(keep.reshape(96, 96)).float()
        with torch.no_grad():
            curve.append(float(score(xk[None])[0, 0]) / 2)
    np.testing.assert_allclose(r["deletion_curve"], curve, atol=2e-3)
    assert r["average_drop"] is None and r["road_morf"] is None  # classification metrics


def test_segment_rows_equal_the_api(images, tmp_path):
    out = tmp_path / "run"
    result = _run(images, out, task="segment", model="task_models:segmenter", methods=("gradcam",))
    assert result.ok
    import task_models

    made = task_models.segmenter()
    for r in _rows(out):
        x = load_image(images / f"{r['name']}.png", size=(64, 64), **IMAGENET)
        api = explain_segmentation(made["model"], x, r["target_index"], method="gradcam")
        saved = np.load(runfolder.map_path(out, "gradcam", r["name"], "npy", r["object_index"]))
        np.testing.assert_allclose(saved, api.map.numpy(), atol=1e-5)
        assert r["object"] == made["categories"][r["target_index"]]


def test_segment_class_predicted_nowhere_refused(images, tmp_path):
    import task_models

    made = task_models.segmenter()
    x = load_image(images / "img00.png", size=(64, 64), **IMAGENET)
    with torch.no_grad():
        present = set(made["model"](x[None])["out"].argmax(1).unique().tolist())
    absent = next(c for c in range(3) if c not in present)
    out = tmp_path / "run"
    result = _run(
        images, out, task="segment", model="task_models:segmenter", methods=("gradcam",),
        target=made["categories"][absent], inputs_from=None,
    )  # fmt: skip
    assert result.n_failed >= 1
    failed = [r for r in runfolder.read_table([out]).to_pylist() if r["status"] == "failed"]
    assert any("predicted nowhere" in r["error"] for r in failed)


def test_prompts_on_the_cli(images, tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "run", str(images), "-o", str(out), "--task", "prompt", "--model",
            "task_models:clip", "--target", "a photo of a cat", "--target", "a dog",
            "-m", "gradcam", "--metrics", "--steps", "4", "--sanity-images", "0", "-q",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [r["object"] for r in rows[:2]] == ["a photo of a cat", "a dog"]
    import task_models

    made = task_models.clip()
    x = load_image(images / f"{rows[0]['name']}.png", size=(32, 32), **CLIP)
    prompts = ["a photo of a cat", "a dog"]
    api = explain_prompts(made["model"], x, prompts, tokenizer=made["tokenizer"])
    for k in range(2):
        saved = np.load(runfolder.map_path(out, "gradcam", rows[0]["name"], "npy", k))
        np.testing.assert_allclose(saved, api.maps[k].numpy(), atol=1e-5)
        assert abs(rows[k]["object_score"] - float(api.probs[k])) < 1e-5
    assert rows[0]["deletion_auc"] is not None


def test_task_usage_errors(images, tmp_path):
    runner = CliRunner()
    args = ["run", str(images), "-o", str(tmp_path / "o"), "-q"]
    bad = runner.invoke(main, [*args, "--task", "detect", "--model", "resnet18"])
    assert bad.exit_code == 2 and "not a torchvision detection model" in bad.output
    bad = runner.invoke(main, [*args, "--task", "prompt", "--model", "task_models:clip"])
    assert bad.exit_code == 2 and "--target" in bad.output
    bad = runner.invoke(
        main, [*args, "--task", "prompt", "--model", "task_models:clip", "--target", "a|b|a"]
    )
    assert bad.exit_code == 2 and "given twice" in bad.output
    bad = runner.invoke(main, [*args, "--task", "detect", "--model", "task_models:detector",
                               "--target", "1"])  # fmt: skip
    assert bad.exit_code == 2 and "takes no --target" in bad.output
    bad = runner.invoke(main, [*args, "--target", "1", "--target", "2"])
    assert bad.exit_code == 2 and "--target given 2 times: --task classify takes one" in bad.output
    bad = runner.invoke(main, [*args, "--score-threshold", "0.3"])  # classify: not read
    assert bad.exit_code == 2 and "--score-threshold is not used by --task classify" in bad.output
    bad = runner.invoke(main, [*args, "--task", "segment", "--score-threshold", "0.3"])
    assert bad.exit_code == 2 and "not used by --task segment" in bad.output
    assert not (tmp_path / "o").exists()


def test_evaluate_refuses_a_task_run(detected):
    out, _ = detected
    result = CliRunner().invoke(main, ["evaluate", str(out), "-q"])
    assert result.exit_code == 2 and "measured while it runs" in result.output


def test_object_rows_deduplicate_per_object(tmp_path):
    rows = [
        {"key": "k", "name": "a", "object": o, "method": "gradcam", "status": "ok",
         "settings_hash": "h", "file": "a.png", "object_index": i}
        for i, o in enumerate(["0", "1"])
    ]  # fmt: skip
    runfolder.write_part(tmp_path, "p", 0, rows, ["gradcam"])
    runfolder.write_part(tmp_path, "p", 1, rows[:1], ["gradcam"])
    table = runfolder.read_table([tmp_path])
    assert sorted(table.column("object").to_pylist()) == ["0", "1"]
    assert runfolder.done_keys(tmp_path, "h", ["gradcam"]) == {("k", "a")}


def test_segment_deletion_against_a_loop(images, tmp_path):
    out = tmp_path / "run"
    _run(
        images, out, task="segment", model="task_models:segmenter", methods=("gradcam",),
        max_objects=1, metrics=True, steps=4,
    )  # fmt: skip
    r = _rows(out)[0]
    import task_models

    model = task_models.segmenter()["model"]
    x = load_image(images / f"{r['name']}.png", size=(64, 64), **IMAGENET).double()
    model = model.double()
    with torch.no_grad():
        region = model(x[None])["out"][0].argmax(0) == r["target_index"]
    saved = np.load(runfolder.map_path(out, "gradcam", r["name"], "npy", 0)).astype(np.float64)
    order = np.argsort(-saved.ravel(), kind="stable")
    curve = []
    for k in range(5):
        keep = np.ones(64 * 64)
        keep[order[: min(k * 1024, 64 * 64)]] = 0  # to 0 in normalised space: the mean colour
        xk = x * torch.from_numpy(keep.reshape(64, 64))
        with torch.no_grad():
            probs = model(xk[None])["out"][0].softmax(0)[r["target_index"]]
        curve.append(float(probs[region].mean()))
    np.testing.assert_allclose(r["deletion_curve"], curve, atol=1e-4)
    assert abs(r["object_score"] - curve[0]) < 1e-4


@pytest.mark.parametrize(
    ("task", "model", "extra"),
    [("detect", "task_models:detr", {"score_threshold": 0.0, "max_objects": 2}),
     ("segment", "task_models:segformer", {"max_objects": 2})],
)  # fmt: skip
def test_hugging_face_detr_and_segformer_on_the_run(images, tmp_path, task, model, extra):
    pytest.importorskip("transformers")
    out = tmp_path / "run"
    result = _run(images, out, task=task, model=model, methods=("gradcam",), **extra)
    assert result.ok and result.n_explained == 3
    rows = _rows(out)
    assert rows and all(r["object"] is not None and not r["empty"] for r in rows)
    assert runfolder.validate(out) == []
    assert np.load(runfolder.map_path(out, "gradcam", rows[0]["name"], "npy", 0)).shape == (64, 64)


def test_explain_api_takes_a_task_module(images, tmp_path):
    import task_models

    import camscope

    net = task_models.segmenter()["model"]
    result = camscope.explain(
        [images], tmp_path / "run", model=net, task="segment", methods=("gradcam",),
        sanity_images=0, max_objects=1,
    )  # fmt: skip
    assert result.ok and result.n_explained == 3
    rows = _rows(tmp_path / "run")
    assert len(rows) == 3 and rows[0]["object"].startswith("class ")
    run = runfolder.read_run(tmp_path / "run")
    assert run["settings"]["model"] == "<LRASPP>" and run["settings"]["image_size"] == [520, 520]


def test_prompts_repeated_or_separated_are_the_same_settings(images, tmp_path):
    pytest.importorskip("transformers")
    from camscope.run import prepare

    def settings(target):
        config = RunConfig(
            inputs=(str(images),), out_dir=str(tmp_path / "o"), task="prompt",
            model="task_models:clip", target=target, methods=("gradcam",),
        )  # fmt: skip
        return prepare(config).settings

    one, two = settings("a cat|a dog"), settings(("a cat", "a dog"))
    assert one == two and one["target"] == ["a cat", "a dog"]


@pytest.mark.parametrize("task", ["classify", "prompt"])
def test_missing_transformers_names_the_extra(images, tmp_path, monkeypatch, task):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    out = tmp_path / "o"
    args = ["run", str(images), "-o", str(out), "-q", "--model", "hf:some/model"]
    extra = ["--task", "prompt", "--target", "a cat"] if task == "prompt" else []
    bad = CliRunner().invoke(main, [*args, *extra])
    assert bad.exit_code == 2, bad.output
    assert "pip install 'camscope[hf]'" in bad.output and "Traceback" not in bad.output
    assert not out.exists()
