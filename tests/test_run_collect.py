"""Collect stage: shards partition the inputs exactly, --inputs-from, names not in UTF-8."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from run_helpers import MODEL, make_images

from camscope.cli import main
from camscope.run import RunConfig, plan, results
from camscope.run.collect import read_inputs_from, shard_of


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("collect")
    make_images(root / "in" / "a", 7, seed=1)
    make_images(root / "in" / "b", 6, seed=2)  # same stems as in a/: names get the folder
    return root


def _config(root: Path, **kw) -> RunConfig:
    return RunConfig(inputs=(str(root / "in"),), out_dir=str(root / "out"), **kw)


def test_shards_cover_every_input_exactly_once(tree):
    everything = plan(_config(tree))
    assert everything.n_total == 13 and not everything.failures
    for n in (1, 2, 3, 5):
        shards = [plan(_config(tree, shard=(i, n))) for i in range(n)]
        seen = [(it.key, it.name) for p in shards for it in p.items]
        assert sorted(seen) == sorted((it.key, it.name) for it in everything.items)
        assert len(seen) == len(set(seen))
    # the rule is documented: sha256 of the path relative to the input folder, mod N
    for item in plan(_config(tree, shard=(1, 3))).items:
        assert shard_of(os.path.relpath(item.path, tree / "in"), 3) == 1
    # names are those of the whole run, whatever the shard
    whole = {it.path: it.name for it in everything.items}
    assert all(whole[it.path] == it.name for it in plan(_config(tree, shard=(0, 2))).items)


def test_inputs_from_lines_and_csv(tree, tmp_path):
    lines = tmp_path / "list.txt"
    lines.write_text(f"# my list\n{tree / 'in' / 'a' / 'img00.png'}\n\n../missing.png\n")
    assert read_inputs_from(lines) == [
        str(tree / "in" / "a" / "img00.png"),
        str(tmp_path / ".." / "missing.png"),
    ]
    table = tmp_path / "list.csv"
    with table.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "file"])
        writer.writerow(["cat", str(tree / "in" / "b" / "img01.png")])
        writer.writerow(["dog", "img02.png"])
    (tmp_path / "img02.png").write_bytes((tree / "in" / "b" / "img02.png").read_bytes())
    got = plan(RunConfig(inputs_from=str(table), out_dir=str(tmp_path / "o")))
    assert [it.path.name for it in got.items] == ["img01.png", "img02.png"]
    missing = plan(RunConfig(inputs_from=str(lines), out_dir=str(tmp_path / "o")))
    assert len(missing.items) == 1 and "missing.png" in missing.failures[0].file


def test_name_not_utf8_is_escaped_losslessly(tmp_path):
    folder = tmp_path / "in"
    (src,) = make_images(folder, 1)
    bad = os.fsencode(folder) + b"/caf\xe9.png"
    os.rename(src, bad)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["run", str(folder), "-o", str(out), *MODEL, "-m", "gradcam", "-q"]
    )
    assert result.exit_code == 0, result.output
    (row,) = [r for r in results.read_table([out]).to_pylist() if r["status"] == "ok"]
    assert row["file"].endswith("caf\\xe9.png")
    assert os.fsencode(results.unescape_path(row["file"])) == bad
    with (out / "predictions.csv").open(encoding="utf-8") as fh:
        assert "caf\\xe9.png" in fh.read()
