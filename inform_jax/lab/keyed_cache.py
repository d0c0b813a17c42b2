"""Results kept on disk under the inputs that made them: a JSON file holds its key beside its result, and a
changed key computes again. The lab's studies resume from these, and the lab caches per-seed quantities that many
runs share (EPPO's SFT-vs-SFT null) in them."""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Callable
from typing import Any


def cached_result(
    path: str, key: dict, compute: Callable[[], Any], same: Callable[[dict, dict], bool] = operator.eq
) -> Any:
    """``compute()``'s JSON result, saved at ``path`` with ``key`` (JSON-ready) and read back instead of computed
    while the saved key answers for ``key``: a killed study resumes from the parts it finished. ``same(saved, key)``
    (both as JSON reads them) decides that, by default equality; the lab's keys tolerate LabConfig fields added
    since (``inform_jax.lab.config.same_lab_key``). The file is written whole and then renamed, so a process killed
    midway leaves none."""
    key = json.loads(json.dumps(key))
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if same(saved["key"], key):
            return saved["result"]
    result = compute()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as f:
        json.dump({"key": key, "result": result}, f)
    os.replace(partial, path)
    return result
