"""How one of our parameters is read from, and written to, Hugging Face tensors: the pieces every family's weight
rules are made of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class UnsupportedModelError(ValueError):
    """The checkpoint's architecture or one of its options is not implemented."""


@dataclass(frozen=True)
class TensorRule:
    """One parameter's Hugging Face source.

    path: the parameter's path below its module (e.g. ``("kernel",)``); hf_names: the HF tensor names (format
    strings with ``{prefix}`` and ``{i}``, the layer); load: HF arrays of one layer -> our array; save: our array ->
    the HF arrays, or None when the HF tensor fuses several of our parameters (``fuse`` then rebuilds it).
    fuse: ``(config, *our arrays in rule order) -> HF array``, for the rules whose ``save`` is None.
    """

    path: tuple[str, ...]
    hf_names: tuple[str, ...]
    load: Callable[..., np.ndarray]
    save: Callable[[np.ndarray], tuple[np.ndarray, ...]] | None
    fuse: Callable[..., np.ndarray] | None = None


# (our path inside the module, rule) pairs
Rules = list[tuple[tuple[str, ...], TensorRule]]


def linear(name: str) -> TensorRule:
    """A Linear kernel: HF stores [out, in], we store [in, out]."""
    return TensorRule(("kernel",), (name,), lambda w: w.T, lambda k: (k.T,))


def vector(name: str) -> TensorRule:
    """A tensor stored the same way on both sides (biases, norm scales, embeddings)."""
    return TensorRule((), (name,), lambda b: b, lambda b: (b,))


def add_linear(rules: Rules, path: tuple[str, ...], hf: str, bias: bool) -> None:
    """The kernel of ``hf.weight`` (and its ``hf.bias``) at ``path``."""
    rules.append((path, linear(hf + ".weight")))
    if bias:
        rules.append((path, TensorRule(("bias",), (hf + ".bias",), lambda b: b, lambda b: (b,))))
