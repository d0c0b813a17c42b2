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

from inform_jax.data.preference import FORMATS as PREFERENCE_FORMATS
from inform_jax.train.checks import (
    at_least,
    check,
    count,
    list_of,
    model_section_rules,
    non_negative,
    one_of,
    optional,
    or_one_of,
    positive,
    probability,
    whole,
    within,
)
from inform_jax.train.config_help import describe_config, option, section
from inform_jax.train.rm.methods import RewardModelMethod, get_method
from inform_jax.train.tracking import REPORTERS


@dataclasses.dataclass
class ModelSection:
    path: str | None = option(None, "local Hugging Face folder (usually the SFT model); the backbone loads from it")
    preset: str | None = option(None, "architecture preset for random init / planning (e.g. llama-3-8b, pythia-1.4b)")
    config: dict[str, Any] = option(help="DecoderConfig fields for random init (override the preset)", factory=dict)
    dtype: str = option("bfloat16", "compute dtype: bfloat16 | float32")
    param_dtype: str = option("float32", "parameter (and optimizer) dtype")
    scan_layers: bool = option(True, "run the blocks as a scan over stacked weights (fast compiles)")
    remat: Any = option(False, "false | full | dots: recompute activations in the backward pass to save memory")
    attention_impl: str = option(
        "auto",
        "auto (cuDNN on GPU, splash on TPU, blocked on CPU; einsum where those cannot run) | cudnn | splash |"
        " blocked | einsum | jax",
    )


@dataclasses.dataclass
class HeadSection:
    latent_dim: int = option(128, "InfoRM latent dimension")
    decoder: str = option("linear", "InfoRM reward decoder: linear | gated (MLP, hidden 4 * latent)")


@dataclasses.dataclass
class LossSection:
    beta: float = option(0.1, "InfoRM KL weight beta")
    kl_reduction: str = option(
        "paper",
        "paper (full KL summed over latent dims) | release (authors' code; beta ~latent_dim x weaker)",
    )
    margin: float | str | None = option(
        None,
        "Bradley-Terry margin: a number, column (each pair's value in the data's margin column, as TRL's "
        "-logsigmoid(r_c - r_r - margin)), or null for none",
    )
    odin_length_coef: float = option(1.0, "ODIN length-correlation term weight")
    odin_orthogonal_coef: float = option(1.0, "ODIN head-orthogonality term weight")
    num_members: int = option(4, "ensemble / WARM members")
    aggregation: str = option("mean", "ensemble reward: mean | min | uwo (mean - coef * variance)")
    uncertainty_coef: float = option(1.0, "uwo aggregation coefficient")


@dataclasses.dataclass
class DataSection:
    train: str | None = option(None, "training preference file (.jsonl / .json / .parquet)")
    eval: str | None = option(None, "held-out preference file")
    format: str | None = option(
        None,
        "hh | implicit | prompt | messages (null: detect from the columns and rows; see docs/guide.md)",
    )
    tokenizer: str | None = option(None, "tokenizer folder (default model.path)")
    max_length: int = option(2048, "tokens per sequence; longer ones lose prompt tokens first (counted)")
    skip_malformed: bool = option(False, "skip and count malformed rows instead of stopping")
    pad_to: str = option(
        "bucket",
        "bucket: each batch padded to its longest row rounded up to a bucket length (powers of two and 1.5x "
        "them, logged when first compiled); max_length: every batch to data.max_length",
    )
    bucket_multiple: int = option(
        8,
        "bucket lengths are multiples of this (on a TPU, of 128 too, splash attention's block, unless "
        "model.attention_impl rules splash out)",
    )
    tokenize: str = option(
        "auto",
        "upfront: every process tokenizes the whole train file; per_process: a metadata pass split over the "
        "processes, then each tokenizes only its devices' rows of each batch; auto: per_process on many "
        "processes",
    )


@dataclasses.dataclass
class DecompositionSection:
    """Prioritized training (methods dir, inform+dir) and the RRM baseline (method rrm)."""

    num_prompts: int = option(8, "dir: other prompts per pair for the prompt-free gap dr2")
    estimator: str = option(
        "bisection",
        "dir: bisection (root of sum w sigmoid(dr - c) = 1/2) | logit (logit of mean sigmoid)",
    )
    weights: str = option("uniform", "dir: importance weights uniform | reward (softmax of (r_w + r_l) / tau)")
    tau: float = option(1.0, "dir: temperature of the reward importance weights")
    priority: str = option(
        "keep_lowest",
        "dir: keep_lowest (lowest keep_fraction of dr2) | sigmoid (sigmoid(-dr2 / tau))",
    )
    keep_fraction: float = option(0.5, "dir: fraction of pairs kept by keep_lowest")
    priority_tau: float = option(1.0, "dir: temperature of the sigmoid priority")
    warmup_steps: int = option(50, "dir: plain Bradley-Terry steps before the first reweighting")
    refresh_every: int = option(50, "dir: steps between dr2 refreshes from the current model")
    rrm_augment: float = option(1.0, "rrm: augmented pairs (other prompts' responses as rejected) per pair")


@dataclasses.dataclass
class OptimSection:
    lr: float = option(9e-6, "peak learning rate")
    warmup_ratio: float = option(0.03, "linear warmup fraction of the steps")
    min_lr_ratio: float = option(0.1, "cosine decay floor, as a fraction of lr")
    b1: float = option(0.9, "Adam beta1")
    b2: float = option(0.95, "Adam beta2")
    eps: float = option(1e-8, "Adam epsilon")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float = option(1.0, "global-norm gradient clipping (0: off)")
    moments_dtype: str = option(
        "float32", "float32 | bfloat16: storage of Adam's two moments (bfloat16 halves them; updates in float32)"
    )


def report_to_option():
    """`train.report_to` of the RM and PPO configs (a new field each time: dataclasses do not share fields)."""
    return option(
        help="where metrics go besides metrics.jsonl: [jsonl, tensorboard, wandb] (<run>/tensorboard/, <run>/wandb/)",
        factory=lambda: ["jsonl"],
    )


def allow_config_change_option():
    """`train.allow_config_change` of the RM and PPO configs."""
    return option(False, "resume a run folder whose config changed (logged in config_changes.jsonl)")


@dataclasses.dataclass
class TrainSection:
    batch_size: int = option(64, "pairs per optimizer step (global)")
    grad_accum: int = option(1, "micro-batches per step")
    epochs: float = option(1.0, "passes over the training pairs")
    max_steps: int | None = option(None, "optimizer steps (overrides epochs)")
    seed: int = option(0, "seed for initialization, data order and latent samples")
    eval_every: int = option(200, "steps between evaluations")
    eval_batch_size: int = option(64, "pairs per evaluation batch")
    save_every: int = option(500, "steps between checkpoints")
    keep_checkpoints: int = option(2, "checkpoints kept")
    log_every: int = option(10, "steps between metric lines in metrics.jsonl")
    output_dir: str = option("runs/rm", "run folder: checkpoints/, metrics.jsonl, config.yaml, final/")
    report_to: list[str] = report_to_option()
    progress: bool = option(True, "show a progress bar")
    allow_config_change: bool = allow_config_change_option()


@dataclasses.dataclass
class MeshSection:
    data: int = option(1, "data-parallel mesh axis size")
    fsdp: int = option(-1, "FSDP mesh axis size (-1: the remaining devices)")
    tensor: int = option(1, "tensor-parallel mesh axis size")


@dataclasses.dataclass
class RMTrainConfig:
    method: str = option("inform", "the reward-model method (see Methods above)")
    model: ModelSection = section(ModelSection)
    head: HeadSection = section(HeadSection)
    loss: LossSection = section(LossSection)
    data: DataSection = section(DataSection)
    decomposition: DecompositionSection = section(DecompositionSection)
    optim: OptimSection = section(OptimSection)
    train: TrainSection = section(TrainSection)
    mesh: MeshSection = section(MeshSection)

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
    ("loss.margin", or_one_of(optional(at_least(float("-inf"))), "column")), ("loss.odin_length_coef", non_negative),
    ("loss.odin_orthogonal_coef", non_negative), ("loss.num_members", count),
    ("loss.aggregation", one_of("mean", "min", "uwo")), ("loss.uncertainty_coef", non_negative),
    ("data.format", one_of(None, *PREFERENCE_FORMATS)), ("data.max_length", at_least(2)),
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
    ("train.report_to", list_of(*REPORTERS)),
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


def describe_fields() -> str:
    """Every config key with its default and meaning (for --help), from the fields' own help."""
    return describe_config(RMTrainConfig())
