"""Peak memory of decoding one image with camscope.io.load_image, per image mode.

For each mode an image of ``--megapixels`` is written (in a child process, so writing it costs
nothing here), then a fresh child process imports camscope, records its peak RSS (VmHWM), decodes
the image and preprocesses it to 224x224, and records the peak again. The difference over the
pixel count is the decode cost in bytes per pixel for that mode.

    python benchmarks/bench_decode_memory.py --megapixels 16
    python benchmarks/bench_decode_memory.py --megapixels 178.95697 --cases rgba-png,i16-png \\
        --max-pixels 178956970 --iter      # worst case just under the default limit
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    # name: (mode to build, file format, extra save options, description)
    "rgb-png": ("RGB", "PNG", {}, "8-bit RGB PNG"),
    "rgb-jpeg": ("RGB", "JPEG", {"quality": 90}, "RGB JPEG"),
    "rgb-jpeg-rot": ("RGB", "JPEG", {"quality": 90, "exif_orientation": 6}, "JPEG, EXIF rotate"),
    "l-png": ("L", "PNG", {}, "8-bit grey PNG"),
    "1-png": ("1", "PNG", {}, "bilevel PNG"),
    "p-png": ("P", "PNG", {}, "palette PNG"),
    "p-trns-png": ("P", "PNG", {"transparency": 0}, "palette PNG with tRNS"),
    "la-png": ("LA", "PNG", {}, "grey + alpha PNG"),
    "rgba-png": ("RGBA", "PNG", {}, "RGBA PNG"),
    "i16-png": ("I;16", "PNG", {}, "16-bit grey PNG"),
    "i-tiff": ("I", "TIFF", {}, "32-bit int TIFF"),
    "f-tiff": ("F", "TIFF", {}, "32-bit float TIFF"),
    "cmyk-jpeg": ("CMYK", "JPEG", {"quality": 90}, "CMYK JPEG"),
    "rgb-jpeg-prog": ("RGB", "JPEG", {"quality": 90, "progressive": True}, "progressive JPEG"),
    "rgb-webp": ("RGB", "WEBP", {"quality": 80}, "RGB WebP"),
    "rgba-webp": ("RGBA", "WEBP", {"quality": 80}, "RGBA WebP"),
    "rgb-avif": ("RGB", "AVIF", {"quality": 60, "speed": 10}, "RGB AVIF"),
    "rgba-tiff-strip": (
        "RGBA",
        "TIFF",
        {"compression": "tiff_deflate", "strip": True},
        "RGBA TIFF, one deflate strip",
    ),
    "rgb-tiff-strip": ("RGB", "TIFF", {"strip": True}, "RGB TIFF, one raw strip"),
    "lab-tiff": ("LAB", "TIFF", {}, "CIELAB TIFF"),
}


def _make(case: str, path: str, megapixels: float) -> None:
    import numpy as np
    from PIL import Image

    mode, fmt, options, _ = CASES[case]
    side = int((megapixels * 1e6) ** 0.5)
    ramp = np.linspace(0, 255, side).astype(np.uint8)
    base = ramp[None, :] + ramp[:, None]  # uint8: wraps modulo 256
    options = dict(options)
    orientation = options.pop("exif_orientation", None)
    if options.pop("strip", False):
        from PIL import TiffImagePlugin

        TiffImagePlugin.STRIP_SIZE = 1 << 40  # the whole image in one strip
    if mode in ("RGB", "RGBA", "CMYK", "LAB"):
        bands = len(mode)
        arr = np.stack([base + np.uint8(40 * k) for k in range(bands)], axis=2)
        image = Image.frombytes(mode, (side, side), arr.tobytes())
    elif mode == "LA":
        arr = np.stack([base, 255 - base], axis=2)
        image = Image.fromarray(arr)
    elif mode == "I;16":
        image = Image.fromarray(base.astype(np.uint16) * 257)
    elif mode == "I":
        image = Image.fromarray(base.astype(np.int32) * 257)
    elif mode == "F":
        image = Image.fromarray(base.astype(np.float32))
    else:
        image = Image.fromarray(base).convert(mode)
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    if fmt == "PNG":
        options.setdefault("compress_level", 1)
    image.save(path, format=fmt, **options)


def _measure(path: str, max_pixels: int, iterate: bool) -> dict:
    def hwm() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    from PIL import Image

    from camscope.io import iter_images, load_image, preprocess

    Image.MAX_IMAGE_PIXELS = None  # camscope's own limit is the one measured
    with Image.open(path) as im:
        size, mode = im.size, im.mode
    before = hwm()
    if iterate:  # the same file twice through two decoding threads
        items = list(iter_images([path, path], mean=(0.5,) * 3, std=(0.5,) * 3, workers=2))
        assert all(item.error is None for item in items), items[0].error
    else:
        rgb = load_image(path, max_pixels=max_pixels)
        preprocess(rgb, size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)
    delta = hwm() - before
    pixels = size[0] * size[1]
    return {"mode": mode, "pixels": pixels, "peak_delta": delta, "bpp": delta / pixels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=16.0)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--max-pixels", type=int, default=10**10)
    parser.add_argument(
        "--iter", action="store_true", help="2 copies through iter_images(workers=2)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        action, case_or_path, value = args.child
        if action == "make":
            _make(case_or_path, value, args.megapixels)
        else:
            print(json.dumps(_measure(case_or_path, int(value), args.iter)))
        return
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            path = os.path.join(tmp, f"{case}.{CASES[case][1].lower()}")
            me = [sys.executable, __file__, "--megapixels", str(args.megapixels)]
            me += ["--iter", "--child"] if args.iter else ["--child"]
            subprocess.run([*me, "make", case, path], check=True, env=env)
            measure = [*me, "measure", path, str(args.max_pixels)]
            out = subprocess.run(measure, check=True, env=env, capture_output=True, text=True)
            row = json.loads(out.stdout)
            print(
                f"{case:14s} {row['mode']:5s} {row['pixels'] / 1e6:6.1f} MP  peak +"
                f"{row['peak_delta'] / 2**20:7.0f} MiB  {row['bpp']:5.1f} bytes/pixel  "
                f"({CASES[case][3]})",
                flush=True,
            )
            os.unlink(path)


if __name__ == "__main__":
    main()
