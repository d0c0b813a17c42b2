"""Metrics as JSON lines (one object per logged step) and a progress bar."""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
from tqdm.auto import tqdm


def _plain(value):
    if isinstance(value, bool | int | np.integer) or (isinstance(value, np.ndarray) and value.dtype.kind in "iub"):
        return int(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return value if math.isfinite(value) else str(value)


class MetricsLog:
    """metrics.jsonl, written by process 0 only (on many hosts the others' writes are no-ops)."""

    def __init__(self, path: str, *, append: bool):
        self.path = path
        self._file = None
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._file = open(path, "a" if append else "w")

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def progress(total: int, initial: int, enabled: bool, desc: str):
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, dynamic_ncols=True)


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
