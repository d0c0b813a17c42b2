"""Experiment tracking beside metrics.jsonl: TensorBoard event files and Weights & Biases runs (`train.report_to`).

    train.report_to: [jsonl]                      # the default: metrics.jsonl only
    train.report_to: [jsonl, tensorboard, wandb]  # also <run>/tensorboard/ and a W&B run kept in <run>/wandb/

Only process 0 writes (the metrics are the same on every process). TensorBoard goes through tensorboardX (small,
no TensorFlow); W&B through the `wandb` package (the `tracking` extra), offline when ``WANDB_MODE=offline``.
A resumed run continues the same records: TensorBoard drops what the killed run logged after its last checkpoint
(``purge_step``); W&B resumes the same run id (kept in <run>/wandb_run_id), and since it keeps a step's first
values, the steps the killed run logged past its checkpoint keep those (metrics.jsonl and TensorBoard have the
resumed run's).
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np

REPORTERS = ("jsonl", "tensorboard", "wandb")


def scalars(record: dict, counter: str) -> dict[str, float]:
    """The finite numbers of a metrics record, the step counter left out (it is the x axis); a record with a
    "split" ("train", "eval") names them "<split>/<key>", since a step can log both with the same keys."""
    out = {}
    prefix = f"{record['split']}/" if isinstance(record.get("split"), str) else ""
    for key, value in record.items():
        if key == counter or isinstance(value, bool | str) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[prefix + key] = number
    return out


class TensorBoardSink:
    """Scalars and images as TensorBoard event files under <run>/tensorboard/."""

    def __init__(self, run_dir: str, *, resume_from: int):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "train.report_to has tensorboard: pip install tensorboardX (or the tracking extra)"
            ) from e
        # purge_step: events at steps after the last checkpoint, logged by a killed run, are dropped on resume.
        purge = resume_from + 1 if resume_from else None
        # Event files are named by the second they were opened in: a unique suffix keeps a quick resume from
        # overwriting the killed run's file.
        suffix = f".{resume_from}.{uuid.uuid4().hex[:8]}"
        self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=purge, filename_suffix=suffix)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, pixels, global_step=step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A Weights & Biases run whose files live in <run>/wandb/; one run id per run folder, resumed with it."""

    def __init__(self, run_dir: str, *, config: dict, name: str, project: str | None):
        try:
            import wandb
        except ImportError as e:
            raise ImportError("train.report_to has wandb: pip install wandb (or the tracking extra)") from e
        self.wandb = wandb
        id_path = os.path.join(run_dir, "wandb_run_id")
        if os.path.exists(id_path):
            run_id = open(id_path).read().strip()
        else:
            run_id = uuid.uuid4().hex[:12]
            with open(id_path, "w") as f:
                f.write(run_id)
        os.makedirs(os.path.join(run_dir, "wandb"), exist_ok=True)
        self.run = wandb.init(
            dir=run_dir, id=run_id, resume="allow", name=name, project=project or "inform-jax", config=config,
            reinit="create_new",
        )  # fmt: skip

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self.run.log({tag: self.wandb.Image(pixels)}, step=step)

    def close(self) -> None:
        self.run.finish()


def open_sinks(run_dir: str, report_to, *, resume_from: int, config: dict, name: str, project: str | None = None):
    """The sinks besides metrics.jsonl that `report_to` names (checked against REPORTERS)."""
    unknown = [r for r in report_to if r not in REPORTERS]
    if unknown:
        raise ValueError(f"train.report_to: unknown {unknown}; choose from {list(REPORTERS)}")
    sinks = []
    if "tensorboard" in report_to:
        sinks.append(TensorBoardSink(run_dir, resume_from=resume_from))
    if "wandb" in report_to:
        sinks.append(WandbSink(run_dir, config=config, name=name, project=project))
    return sinks


def read_png(path: str) -> np.ndarray:
    """[H, W, 3] uint8 pixels of a PNG figure (alpha dropped)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    return pixels[..., :3]


def report_figures(run_dir: str, report_to, figures, *, step: int, config: dict, name: str, values=None) -> int:
    """Send a report's figures (PNG paths, possibly nested in lists and dicts, keyed by tag) and a few summary
    numbers to the trackers `report_to` names besides jsonl, as one run in `run_dir`; returns the images sent."""
    sinks = open_sinks(run_dir, report_to, resume_from=0, config=config, name=name)
    sent = 0
    try:
        for tag, path in _figure_paths(figures):
            pixels = read_png(path)
            for sink in sinks:
                sink.image(tag, pixels, step)
            sent += bool(sinks)
        for sink in sinks:
            if values:
                sink.scalars(values, step)
    finally:
        for sink in sinks:
            sink.close()
    return sent


def _figure_paths(figures, prefix: str = ""):
    """(tag, path) of every PNG path in a nested dict / list of paths."""
    if isinstance(figures, str):
        yield prefix or os.path.splitext(os.path.basename(figures))[0], figures
    elif isinstance(figures, dict):
        for key, value in figures.items():
            yield from _figure_paths(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(figures, list | tuple):
        for i, value in enumerate(figures):
            yield from _figure_paths(value, f"{prefix}/{i}" if len(figures) > 1 else prefix)
