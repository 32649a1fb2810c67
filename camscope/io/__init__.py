"""Input collection, robust image decoding, preprocessing and atomic writes.

Everything that reads user images or writes run artefacts goes through this package:

* :mod:`camscope.io.inputs`: files, folders and globs -> image paths; every bad input is a
  one-line :class:`InputError` (``"{path}: {cause}"``); output base names (:func:`unique_names`);
* :mod:`camscope.io.decode`: any image -> fully decoded 8-bit RGB (:func:`load_image`), resize and
  normalise (:func:`preprocess`), background decoding (:func:`iter_images`);
* :mod:`camscope.io.files`: atomic writes (temporary file + :func:`os.replace`) of PNG, NPY, CSV,
  JSON, text and figures.
"""

from camscope.io.decode import (
    DEFAULT_MAX_PIXELS,
    FORMAT_EXTRA_BYTES,
    LoadedImage,
    bytes_per_pixel,
    decode_budget,
    iter_images,
    load_image,
    preprocess,
    resize_rgb,
    to_tensor,
)
from camscope.io.files import (
    TEMP_PREFIX,
    atomic_open,
    atomic_write_bytes,
    escape_name,
    save_figure,
    save_npy,
    save_png,
    unescape_name,
    write_csv,
    write_json,
    write_text,
)
from camscope.io.inputs import (
    IMAGE_EXTENSIONS,
    NAME_MAX,
    InputError,
    collect_inputs,
    image_extensions,
    is_run_folder,
    unique_names,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMAT_EXTRA_BYTES",
    "IMAGE_EXTENSIONS",
    "NAME_MAX",
    "TEMP_PREFIX",
    "InputError",
    "LoadedImage",
    "atomic_open",
    "atomic_write_bytes",
    "bytes_per_pixel",
    "collect_inputs",
    "decode_budget",
    "escape_name",
    "image_extensions",
    "is_run_folder",
    "iter_images",
    "load_image",
    "preprocess",
    "resize_rgb",
    "save_figure",
    "save_npy",
    "save_png",
    "to_tensor",
    "unescape_name",
    "unique_names",
    "write_csv",
    "write_json",
    "write_text",
]
