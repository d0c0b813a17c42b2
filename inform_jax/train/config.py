"""Reward-model training configuration: nested dataclasses, read from YAML, overridden from the command line.

Defaults follow the InfoRM authors' release for Llama-3-8B where it states them (lr 9e-6, global batch 64,
1 epoch, cosine to 0.1 * lr, 3% warmup, Adam betas (0.9, 0.95), no weight decay, clip 1.0, bf16 compute),
and the paper's bottleneck (latent 128, beta 0.1, full KL summed over latent dimensions).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import yaml

from inform_jax.train.checks import (
    at_least,
    check,
    count,
    model_section_rules,
    non_negative,
    one_of,
    optional,
    positive,
    probability,
    whole,
    within,
)
from inform_jax.train.rm.methods import RewardModelMethod, get_method


@dataclasses.dataclass
class ModelSection:
    path: str | None = None  # local Hugging Face folder (e.g. the SFT model); None: random init
    preset: str | None = None  # architecture preset (inform_jax.models.presets) for random init and planning
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # DecoderConfig fields (override the preset)
    dtype: str = "bfloat16"  # compute dtype
    param_dtype: str = "float32"
    scan_layers: bool = True
    remat: Any = False  # False | "full" | "dots"
    attention_impl: str = "auto"


@dataclasses.dataclass
class HeadSection:
    latent_dim: int = 128
    decoder: str = "linear"  # "linear" | "gated" (IB head only)


@dataclasses.dataclass
class LossSection:
    beta: float = 0.1
    kl_reduction: str = "paper"  # "paper" (full KL summed over dims) | "release" (authors' code)
    margin: float | None = None
    odin_length_coef: float = 1.0
    odin_orthogonal_coef: float = 1.0
    num_members: int = 4  # ensemble / WARM members
    aggregation: str = "mean"  # ensemble: "mean" | "min" | "uwo"
    uncertainty_coef: float = 1.0


@dataclasses.dataclass
class DataSection:
    train: str | None = None
    eval: str | None = None
    format: str | None = None  # "hh" | "prompt" | "messages"; None detects from the columns
    tokenizer: str | None = None  # defaults to model.path
    max_length: int = 2048
    skip_malformed: bool = False
    pad_to: str = "bucket"  # "bucket": each batch to its longest row's bucket length | "max_length": every batch
    bucket_multiple: int = 8  # bucket lengths are multiples of this (128 for TPU attention kernels)
    tokenize: str = "auto"  # "upfront": every process the whole file | "per_process": its batch rows | "auto"


@dataclasses.dataclass
class DecompositionSection:
    """Prioritized training (methods dir, inform+dir) and the RRM baseline (method rrm)."""

    num_prompts: int = 8  # other prompts per pair to estimate the prompt-free gap dr2
    estimator: str = "bisection"  # "bisection": root of sum_i w_i sigmoid(dr_i - c) = 1/2 | "logit"
    weights: str = "uniform"  # importance weights: "uniform" (P(X)) | "reward" (softmax of (r_w + r_l) / tau)
    tau: float = 1.0
    priority: str = "keep_lowest"  # "keep_lowest" (the lowest keep_fraction of dr2) | "sigmoid" (sigmoid(-dr2/tau))
    keep_fraction: float = 0.5
    priority_tau: float = 1.0
    warmup_steps: int = 50  # plain BT before the first reweighting
    refresh_every: int = 50  # steps between dr2 refreshes
    rrm_augment: float = 1.0  # RRM: augmented pairs per original pair


@dataclasses.dataclass
class OptimSection:
    lr: float = 9e-6
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    moments_dtype: str = "float32"  # dtype Adam's two moments are stored in (bfloat16 halves them; math in float32)


@dataclasses.dataclass
class TrainSection:
    batch_size: int = 64  # global batch of pairs per optimizer step
    grad_accum: int = 1  # micro-batches per step (batch_size must divide)
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    seed: int = 0
    eval_every: int = 200
    eval_batch_size: int = 64
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    output_dir: str = "runs/rm"
    progress: bool = True
    allow_config_change: bool = False  # resume a run whose config changed (the change is logged), else refuse


@dataclasses.dataclass
class MeshSection:
    data: int = 1
    fsdp: int = -1
    tensor: int = 1


@dataclasses.dataclass
class RMTrainConfig:
    method: str = "inform"
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    head: HeadSection = dataclasses.field(default_factory=HeadSection)
    loss: LossSection = dataclasses.field(default_factory=LossSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    decomposition: DecompositionSection = dataclasses.field(default_factory=DecompositionSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)

    def __post_init__(self):
        get_method(self.method)  # an unknown method raises with the known ones
        check(self, RM_RULES)
        d = self.decomposition
        if d.estimator not in ("bisection", "logit") or d.weights not in ("uniform", "reward"):
            raise ValueError("decomposition.estimator must be bisection|logit and decomposition.weights uniform|reward")
        if d.priority not in ("keep_lowest", "sigmoid") or not 0 < d.keep_fraction <= 1 or d.refresh_every < 1:
            raise ValueError(
                "decomposition.priority must be keep_lowest|sigmoid, keep_fraction in (0, 1], refresh_every >= 1"
            )
        if self.train.batch_size % self.train.grad_accum:
            raise ValueError(
                f"train.batch_size={self.train.batch_size} must be a multiple of "
                f"train.grad_accum={self.train.grad_accum}"
            )

    @property
    def method_spec(self) -> RewardModelMethod:
        """The registered method (head, scheme, loss, data transform, callbacks)."""
        return get_method(self.method)

    @property
    def head_kind(self) -> str:
        return self.method_spec.head

    @property
    def scheme(self) -> str:
        return self.method_spec.scheme

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Keys with a fixed set of choices or a valid range, checked when the config is built.
RM_RULES = [
    *model_section_rules("model"),
    ("head.latent_dim", count), ("head.decoder", one_of("linear", "gated")),
    ("loss.beta", non_negative), ("loss.kl_reduction", one_of("paper", "release")),
    ("loss.margin", optional(at_least(float("-inf")))), ("loss.odin_length_coef", non_negative),
    ("loss.odin_orthogonal_coef", non_negative), ("loss.num_members", count),
    ("loss.aggregation", one_of("mean", "min", "uwo")), ("loss.uncertainty_coef", non_negative),
    ("data.format", one_of(None, "hh", "prompt", "messages")), ("data.max_length", at_least(2)),
    ("data.pad_to", one_of("bucket", "max_length")), ("data.bucket_multiple", count),
    ("data.tokenize", one_of("auto", "upfront", "per_process")),
    ("decomposition.num_prompts", count), ("decomposition.tau", positive), ("decomposition.priority_tau", positive),
    ("decomposition.warmup_steps", whole), ("decomposition.rrm_augment", non_negative),
    ("optim.lr", positive), ("optim.warmup_ratio", within(0, 1, open_high=True)), ("optim.min_lr_ratio", probability),
    ("optim.b1", within(0, 1, open_high=True)), ("optim.b2", within(0, 1, open_high=True)), ("optim.eps", positive),
    ("optim.weight_decay", non_negative), ("optim.grad_clip", non_negative),
    ("optim.moments_dtype", one_of("float32", "bfloat16")),
    ("train.batch_size", count), ("train.grad_accum", count), ("train.epochs", positive),
    ("train.max_steps", optional(count)), ("train.eval_every", count), ("train.eval_batch_size", count),
    ("train.save_every", count), ("train.keep_checkpoints", count), ("train.log_every", count),
]  # fmt: skip


def _build(cls, values: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in (values or {}).items():
        if key not in fields:
            raise ValueError(f"unknown config key {where + key!r}; known: {sorted(fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, where + key)
    return cls(**kwargs)


def _coerce(value, hint, name: str):
    """Numbers as the field's type. YAML 1.1 reads `1e-4` (no dot) as a string; a float field takes it as a float.
    A value that is not a number where one is required is an error naming the key."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None or isinstance(value, bool) or not ({float, int} & set(allowed)):
        return value
    if float in allowed and isinstance(value, int | float | str):
        try:
            return float(value)
        except ValueError:
            pass
    elif int in allowed and isinstance(value, int):
        return value
    elif int in allowed and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if str in allowed:
        return value
    kind = "a number" if float in allowed else "an integer"
    raise ValueError(f"config key {name!r}: expected {kind}, got {value!r}")


def config_from_dict(values: dict, cls=None):
    """A config dataclass (RMTrainConfig by default) from nested dicts; unknown keys raise with their name."""
    return _build(cls or RMTrainConfig, values, "")


def load_config(path: str | None, overrides: list[str] = (), cls=None):
    """Read a YAML file (or start from defaults) and apply `section.key=value` overrides (YAML-parsed values)."""
    values: dict = {}
    if path:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return config_from_dict(values, cls)


FIELD_HELP = {
    "method": "the reward-model method (see Methods above)",
    "model.path": "local Hugging Face folder (usually the SFT model); the backbone loads from it",
    "model.preset": "architecture preset for random init / planning (e.g. llama-3-8b, pythia-1.4b)",
    "model.config": "DecoderConfig fields for random init (override the preset)",
    "model.dtype": "compute dtype: bfloat16 | float32",
    "model.param_dtype": "parameter (and optimizer) dtype",
    "model.scan_layers": "run the blocks as a scan over stacked weights (fast compiles)",
    "model.remat": "false | full | dots: recompute activations in the backward pass to save memory",
    "model.attention_impl": "auto (cuDNN on GPU, splash on TPU, blocked on CPU; einsum where those cannot run) | "
    "cudnn | splash | blocked | einsum | jax",
    "head.latent_dim": "InfoRM latent dimension",
    "head.decoder": "InfoRM reward decoder: linear | gated (MLP, hidden 4 * latent)",
    "loss.beta": "InfoRM KL weight beta",
    "loss.kl_reduction": "paper (full KL summed over latent dims) | release (authors' code; beta ~latent_dim x weaker)",
    "loss.margin": "Bradley-Terry margin (null for none)",
    "loss.odin_length_coef": "ODIN length-correlation term weight",
    "loss.odin_orthogonal_coef": "ODIN head-orthogonality term weight",
    "loss.num_members": "ensemble / WARM members",
    "loss.aggregation": "ensemble reward: mean | min | uwo (mean - coef * variance)",
    "loss.uncertainty_coef": "uwo aggregation coefficient",
    "data.train": "training preference file (.jsonl / .json / .parquet)",
    "data.eval": "held-out preference file",
    "data.format": "hh | prompt | messages (null: detect from the columns)",
    "data.tokenizer": "tokenizer folder (default model.path)",
    "data.max_length": "tokens per sequence; longer ones lose prompt tokens first (counted)",
    "data.pad_to": "bucket: each batch padded to its longest row rounded up to a bucket length (powers of two and "
    "1.5x them, logged when first compiled); max_length: every batch to data.max_length",
    "data.bucket_multiple": "bucket lengths are multiples of this (8; 128 suits TPU attention kernels)",
    "data.tokenize": "upfront: every process tokenizes the whole train file; per_process: a metadata pass split over "
    "the processes, then each tokenizes only its devices' rows of each batch; auto: per_process on many processes",
    "data.skip_malformed": "skip and count malformed rows instead of stopping",
    "decomposition.num_prompts": "dir: other prompts per pair for the prompt-free gap dr2",
    "decomposition.estimator": "dir: bisection (root of sum w sigmoid(dr - c) = 1/2) | logit (logit of mean sigmoid)",
    "decomposition.weights": "dir: importance weights uniform | reward (softmax of (r_w + r_l) / tau)",
    "decomposition.tau": "dir: temperature of the reward importance weights",
    "decomposition.priority": "dir: keep_lowest (lowest keep_fraction of dr2) | sigmoid (sigmoid(-dr2 / tau))",
    "decomposition.keep_fraction": "dir: fraction of pairs kept by keep_lowest",
    "decomposition.priority_tau": "dir: temperature of the sigmoid priority",
    "decomposition.warmup_steps": "dir: plain Bradley-Terry steps before the first reweighting",
    "decomposition.refresh_every": "dir: steps between dr2 refreshes from the current model",
    "decomposition.rrm_augment": "rrm: augmented pairs (other prompts' responses as rejected) per pair",
    "optim.lr": "peak learning rate",
    "optim.warmup_ratio": "linear warmup fraction of the steps",
    "optim.min_lr_ratio": "cosine decay floor, as a fraction of lr",
    "optim.b1": "Adam beta1",
    "optim.b2": "Adam beta2",
    "optim.eps": "Adam epsilon",
    "optim.weight_decay": "AdamW weight decay",
    "optim.grad_clip": "global-norm gradient clipping (0: off)",
    "optim.moments_dtype": "float32 | bfloat16: storage of Adam's moments (updates computed in float32)",
    "train.batch_size": "pairs per optimizer step (global)",
    "train.grad_accum": "micro-batches per step",
    "train.epochs": "passes over the training pairs",
    "train.max_steps": "optimizer steps (overrides epochs)",
    "train.seed": "seed for initialization, data order and latent samples",
    "train.eval_every": "steps between evaluations",
    "train.eval_batch_size": "pairs per evaluation batch",
    "train.save_every": "steps between checkpoints",
    "train.keep_checkpoints": "checkpoints kept",
    "train.log_every": "steps between metric lines in metrics.jsonl",
    "train.output_dir": "run folder: checkpoints/, metrics.jsonl, config.yaml, final/",
    "train.progress": "show a progress bar",
    "train.allow_config_change": "resume a run folder whose config changed (logged in config_changes.jsonl)",
    "mesh.data": "data-parallel mesh axis size",
    "mesh.fsdp": "FSDP mesh axis size (-1: the remaining devices)",
    "mesh.tensor": "tensor-parallel mesh axis size",
}


def describe_fields() -> str:
    """Every config key with its default and meaning (for --help)."""
    lines = []
    defaults = RMTrainConfig().to_dict()
    for key, text in FIELD_HELP.items():
        node = defaults
        for part in key.split("."):
            node = node[part]
        lines.append(f"  {key} (default {node!r}): {text}")
    return "\n".join(lines)
