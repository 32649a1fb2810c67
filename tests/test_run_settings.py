"""Run options declared once (RunConfig): the CLI flags, checks and run.json come from it."""

from __future__ import annotations

import dataclasses
import json

import click
import pytest
from click.testing import CliRunner
from run_helpers import MODEL, make_images

from camscope.cli import main
from camscope.io import runfolder
from camscope.run import RunConfig, UsageError, prepare
from camscope.run.config import config_from_record, config_record, from_command_line, options

pytestmark = pytest.mark.usefixtures("single_thread")


def test_every_run_flag_is_a_runconfig_field_with_its_default():
    command = main.commands["run"]
    by_name = {p.name: p for p in command.params if isinstance(p, click.Option)}
    declared = options()
    for name, option in declared.items():
        param = by_name[name]
        assert option.flag in param.opts, name
        assert param.help == option.help
        default = next(f for f in dataclasses.fields(RunConfig) if f.name == name)
        want = default.default if default.default is not dataclasses.MISSING else None
        if option.kind == "list":
            want = ",".join(want)
        if option.kind != "flag":
            assert param.default == want, name
    from camscope.methods.registry import option_keys

    extra = set(by_name) - set(declared) - set(option_keys())
    assert extra == {"quiet", "ray_address", "workers"}, extra


def test_command_line_to_config():
    config = from_command_line(
        ["a.png"],
        {"methods": "gradcam, scorecam", "shard": "1/4", "batch_size": 3},
        {"max_channels": 4, "sscam_samples": None},
        argv=["camscope", "run"],
    )
    assert config.methods == ("gradcam", "scorecam")
    assert config.shard == (1, 4) and config.batch_size == 3
    assert config.method_options == {"max_channels": 4}
    assert config.argv == ("camscope", "run")
    with pytest.raises(UsageError, match="--shard x: use I/N"):
        from_command_line([], {"shard": "x"}, {})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be an integer >= 1, got 0"),
        ({"sanity_images": -1}, "--sanity-images must be an integer >= 0"),
        ({"steps": True}, "--steps must be an integer >= 1"),
        ({"save_maps": "all"}, "--save-maps must be one of both, npy, png, none"),
        ({"labels": "/nonexistent.csv"}, "--labels /nonexistent.csv: no such file"),
    ],
)
def test_checks_come_from_the_declaration(change, message):
    with pytest.raises(UsageError, match=message.replace("+", r"\+")):
        RunConfig(inputs=("x",), **change).check()


def test_run_json_round_trip_keeps_options_per_method(tmp_path):
    make_images(tmp_path / "in", 1)
    config = RunConfig(
        inputs=(str(tmp_path / "in"),),
        out_dir=str(tmp_path / "out"),
        methods=("sscam", "iscam", "smoothgradcampp"),
        method_options={"sscam_samples": 2, "iscam_samples": 1, "smooth_samples": 3},
        model="test_resnet",
        random_weights=True,
    )
    ctx = prepare(config)
    record = json.loads(json.dumps(config_record(ctx)))  # as run.json holds it
    assert record["settings"]["method_options"]["sscam"]["num_samples"] == 2
    assert record["settings"]["method_options"]["iscam"]["num_samples"] == 1
    again = prepare(config_from_record(record, inputs=config.inputs, out_dir=config.out_dir))
    assert again.options == ctx.options
    assert again.settings_hash == ctx.settings_hash


def test_per_method_options_are_checked():
    base = {"inputs": ("x",), "model": "test_resnet", "random_weights": True}
    with pytest.raises(UsageError, match="sscam has no option 'steps'"):
        prepare(RunConfig(methods=("sscam",), method_options={"sscam": {"steps": 2}}, **base))
    with pytest.raises(UsageError, match="iscam, which is not selected"):
        prepare(RunConfig(methods=("sscam",), method_options={"iscam": {"num_samples": 2}}, **base))


def test_evaluate_after_options_that_share_a_keyword(tmp_path):
    """Regression: --sscam-samples and --iscam-samples are both `num_samples`; evaluate used to
    merge them into one dict and refuse the run ("the model loaded now differs")."""
    make_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), "-o", str(out), *MODEL, "--methods", "sscam,iscam"]
    args += ["--sscam-samples", "2", "--iscam-samples", "1", "--sanity-images", "0", "-q"]
    args += ["--save-maps", "none"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    before = runfolder.read_run(out)["settings"]["method_options"]
    result = CliRunner().invoke(
        main, ["evaluate", str(out), "--steps", "2", "--sanity-images", "0", "-q"]
    )
    assert result.exit_code == 0, result.output
    run = runfolder.read_run(out)
    assert run["settings"]["method_options"] == before
    assert run["settings"]["metrics"] is True
    table = runfolder.read_table([out], columns=["deletion_auc"])
    assert all(v is not None for v in table.column("deletion_auc").to_pylist())
