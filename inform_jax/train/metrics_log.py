"""Metrics as JSON lines (one object per logged step), forwarded to TensorBoard / W&B when asked, and a progress
bar."""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
from tqdm.auto import tqdm

from inform_jax.train.tracking import open_sinks, read_png, scalars


def _plain(value):
    if isinstance(value, bool | int | np.integer) or (isinstance(value, np.ndarray) and value.dtype.kind in "iub"):
        return int(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return value if math.isfinite(value) else str(value)


class MetricsLog:
    """metrics.jsonl, written by process 0 only (on many hosts the others' writes are no-ops).

    resume_from: the step (or iteration, named by ``counter``) a run resumes at; lines past it, written by the
    killed run after its last checkpoint, are dropped so that each step has one line. 0 starts a new file.
    report_to: `train.report_to`; metrics.jsonl is always written (resuming and the reports read it), and
    "tensorboard" / "wandb" also send every record's numbers there (`inform_jax.train.tracking`), with `config`
    (the run's config as a dict) and `name` for W&B.
    """

    def __init__(
        self,
        path: str,
        *,
        resume_from: int = 0,
        counter: str = "step",
        report_to=("jsonl",),
        config: dict | None = None,
        name: str = "",
    ):
        self.path = path
        self.counter = counter
        self._file = None
        self._sinks = []
        if jax.process_index() != 0:
            return
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        kept = []
        if resume_from > 0 and os.path.exists(path):
            kept = [line for line in read_metrics(path, skip_broken=True) if line.get(counter, 0) <= resume_from]
        if kept:  # rewritten beside, then swapped in: a crash here leaves the old file whole
            with open(path + ".tmp", "w") as f:
                f.writelines(json.dumps(record) + "\n" for record in kept)
            os.replace(path + ".tmp", path)
        self._file = open(path, "a" if kept else "w")
        run_dir = os.path.dirname(path) or "."
        self._sinks = open_sinks(run_dir, report_to, resume_from=resume_from, config=config or {},
                                 name=name or os.path.basename(os.path.abspath(run_dir)))  # fmt: skip

    def write(self, record: dict) -> None:
        if self._file is not None:
            plain = {k: _plain(v) for k, v in record.items()}
            self._file.write(json.dumps(plain) + "\n")
            self._file.flush()
            values = scalars(plain, self.counter)
            for sink in self._sinks:
                sink.scalars(values, int(plain.get(self.counter, 0)))

    def figure(self, tag: str, png_path: str, step: int) -> None:
        """Send a figure the run drew (a PNG file) to TensorBoard / W&B as an image; nothing for jsonl alone."""
        if self._sinks:
            pixels = read_png(png_path)
            for sink in self._sinks:
                sink.image(tag, pixels, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for sink in self._sinks:
            sink.close()
        self._sinks = []


def progress(total: int, initial: int, enabled: bool, desc: str):
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)


def read_metrics(path: str, *, skip_broken: bool = False) -> list[dict]:
    """The metrics lines of a file; with ``skip_broken``, lines that are not JSON (a write cut by a kill) are left
    out instead of raising."""
    records = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if not skip_broken:
                    raise
    return records
