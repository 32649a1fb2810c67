"""Tasks beyond image classification, built on the methods: detection (one map per object).

Each module turns its task's model output into the scores the CAM methods explain, so every
registered method applies unchanged. Importing this package imports nothing.
"""
