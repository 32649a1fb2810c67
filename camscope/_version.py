"""The package version, its one source (pyproject.toml reads it; so do run.json and --version).

Not the version of the run-folder format: that is `camscope.io.runfolder.FORMAT_VERSION`, which
changes only when folders written before can no longer be read as they were.
"""

__version__ = "0.1.0"
