"""Tasks beyond image classification, built on the methods: detection, segmentation, prompts.

Each module turns its task's model output into the scores the CAM methods explain, so every
registered method applies unchanged; `camscope.tasks.registry` is what a run asks of a task
(``camscope run --task``). Importing this package imports nothing.
"""
