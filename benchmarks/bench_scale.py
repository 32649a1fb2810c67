"""Whole-run scale benchmark: wall time, peak RSS and report size against the number of images.

Each run is a separate ``camscope run`` process (so its peak RSS is its own, read from
``os.wait4``); inputs are the shared ImageNet samples, repeated under other names to reach the
wanted count. A repeated copy gets a few bytes appended after the image data (decoders ignore
them), so every copy has its own content hash and is a separate image for resume, with the same
pixels. Results are printed as one JSON object per run and appended to ``--json``.

Examples::

    python benchmarks/bench_scale.py ../shared/imagenet-samples --sizes 100,500,1000 \\
        --methods gradcam,ablationcam --metrics --resume-check
    # the same 100-image run with another checkout of camscope (e.g. the previous release):
    python benchmarks/bench_scale.py ../shared/imagenet-samples --sizes 100 --metrics \\
        --methods gradcam,ablationcam,scorecam --code /path/to/old/checkout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def make_inputs(source: Path, n: int, dest: Path) -> Path:
    """``n`` images in ``dest``: the samples in sorted order, repeated under other names."""
    samples = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not samples:
        raise SystemExit(f"{source}: no images")
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = samples[i % len(samples)]
        repeat = i // len(samples)
        name = src.name if repeat == 0 else f"r{repeat}_{src.name}"
        target = dest / name
        if target.exists():
            continue
        if repeat == 0:
            os.symlink(src.resolve(), target)
        else:
            data = src.read_bytes() + f"camscope-bench-copy-{repeat}".encode()
            target.write_bytes(data)
    return dest


def timed_run(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``cmd``; wall seconds, peak RSS (GB) of that process and its exit code."""
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return {
        "seconds": round(wall, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 3),
        "exit": os.waitstatus_to_exitcode(status),
    }


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--methods", default="gradcam,ablationcam")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--metrics", action="store_true")
    parser.add_argument("--extra", default="", help="extra arguments for camscope run")
    parser.add_argument("--code", type=Path, default=None, help="camscope checkout to run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/camscope-scale"))
    parser.add_argument("--resume-check", action="store_true", help="rerun into the finished run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    env = dict(os.environ)
    if args.code is not None:
        env["PYTHONPATH"] = str(args.code.resolve())
    labels = args.samples / "labels.csv"
    for n in (int(s) for s in args.sizes.split(",")):
        inputs = make_inputs(args.samples, n, args.work / f"inputs-{n}")
        out = args.work / f"run-{n}-{args.methods.replace(',', '+')}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "camscope.cli", "run", str(inputs), "--out", str(out)]
        cmd += ["--model", args.model, "--methods", args.methods, "--quiet"]
        if args.metrics:
            cmd += ["--metrics"] + (["--labels", str(labels)] if labels.exists() else [])
        cmd += args.extra.split()
        record = {"images": n, "methods": args.methods, "metrics": args.metrics}
        record |= {"code": str(args.code or "this checkout"), "extra": args.extra}
        record |= timed_run(cmd, env, out.with_suffix(".log"))
        report = out / "report.html"
        size = report.stat().st_size / 1e6 if report.exists() else None
        record["report_html_mb"] = None if size is None else round(size, 2)
        if args.resume_check:
            again = timed_run(cmd, env, out.with_suffix(".resume.log"))
            record["resume_seconds"] = again["seconds"]
            record["resume_exit"] = again["exit"]
        record["machine"] = platform.processor() or platform.machine()
        record["date"] = time.strftime("%Y-%m-%d %H:%M")
        line = json.dumps(record)
        print(line, flush=True)  # noqa: T201 - benchmark output
        if args.json is not None:
            with args.json.open("a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
