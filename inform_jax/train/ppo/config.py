"""PPO / EPPO configuration (YAML + section.key=value overrides, like the reward-model config).

Defaults follow the EPPO authors' DeepSpeed-Chat settings where docs/reference.md states them (gamma 1, lambda
0.95, clip 0.2, value clip 0.2, 1 PPO epoch, eta 2.0, reward clamp 5, per-token KL coefficient 0 for both
PPO and EPPO); learning rates are for the small synthetic world and need lowering for 7B models
(authors: actor 5e-7, critic 1e-6).
"""

from __future__ import annotations

import dataclasses

from inform_jax.losses import ENERGY_SITES, KL_ESTIMATORS
from inform_jax.train import checks as ck
from inform_jax.train.config import MeshSection, ModelSection
from inform_jax.train.tracking import REPORTERS


@dataclasses.dataclass
class RewardSection:
    kind: str = "model"  # "model": a reward-model folder | "gold": the synthetic world's gold reward
    path: str | None = None  # reward model folder (save_reward_model output)
    gold: str | None = None  # "world": log the synthetic world's gold reward and hacked flag beside the proxy
    gold_path: str | None = None  # a gold reward model folder scored on decoded text and logged as gold_reward
    clip: float | None = 5.0  # clamp of the final sequence reward (after penalties)


@dataclasses.dataclass
class RolloutSection:
    batch_size: int = 32  # prompts per PPO iteration
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False


@dataclasses.dataclass
class PPOSection:
    epochs: int = 1
    minibatches: int = 1
    clip: float = 0.2
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    entropy_coef: float = 0.0
    actor_lr: float = 1e-4
    critic_lr: float = 1e-4
    grad_clip: float = 1.0
    whiten_advantages: bool = True
    critic_init: str = "sft"  # "sft" | "reward_model" (backbone of the reward model folder)


@dataclasses.dataclass
class KLSection:
    coef: float = 0.0  # per-token KL coefficient ("PPO w/ KL" sets it > 0)
    estimator: str = "k1"  # k1 | k2 | k3
    adaptive: bool = False
    target: float = 6.0
    horizon: int = 10000


@dataclasses.dataclass
class EnergySection:
    eta: float = 0.0  # EPPO: r - eta * |dE_sft - dE_policy| (authors: 2.0); 0 = plain PPO
    site: str = "residual"  # "residual" (the paper's) | "mlp" (the authors' code)
    normalize: bool = True  # L1 divided by the width (the scale eta = 2.0 was set for)
    sft_energy: str = "cached"  # "cached": once per prompt from the SFT model's greedy response | "regenerate"
    sft_samples: int = 0  # 0: the SFT model's greedy response; k > 0: average over k sampled responses


@dataclasses.dataclass
class IBLSection:
    """InfoRM journal extension's IBL: r - coef * Mahalanobis(latent; SFT latents), latents of the reward model
    (InfoRM: IB latent mean; standard RM: final hidden state) on the SFT model's greedy responses to the prompts."""

    coef: float = 0.0  # 0 = off
    covariance: str = "empirical"  # "empirical" (the authors': sample covariance + ridge I) | "ledoit_wolf"
    ridge: float = 1e-6
    max_prompts: int = 0  # SFT responses used to fit the distribution: the first N prompts (0 = all)


@dataclasses.dataclass
class DetectSection:
    """Overoptimization detection during training: every `every` iterations, the policy's greedy responses to the
    first `num_prompts` prompts are embedded by the reward model and compared with the SFT model's (CSI, MOP),
    logged as csi, csi_per_sample, mop; latents saved under train.output_dir/detect/ for plots."""

    every: int = 0  # 0 = off
    num_prompts: int = 64
    k: int | None = None  # k-means k; None: the k_rule
    k_rule: str = "silhouette"
    alpha: float = 0.1  # MOP test level


@dataclasses.dataclass
class LengthPenaltySection:
    enabled: bool = False  # the LP baseline: r + sigma_running * (1 - L / N)


@dataclasses.dataclass
class PPODataSection:
    prompts: str | None = None  # prompt file (.jsonl / .json / .parquet, column "prompt")
    tokenizer: str | None = None  # defaults to policy.path
    max_prompt_length: int = 16
    pad_to: str = "bucket"  # "bucket": each rollout's prompts cut to the longest one's bucket | "max_length"
    bucket_multiple: int = 8


@dataclasses.dataclass
class PPOTrainSection:
    iterations: int = 100
    seed: int = 0
    log_every: int = 1
    save_every: int = 50
    keep_checkpoints: int = 2
    output_dir: str = "runs/ppo"
    report_to: list[str] = dataclasses.field(default_factory=lambda: ["jsonl"])  # + "tensorboard", "wandb"
    progress: bool = True
    allow_config_change: bool = False  # resume a run whose config changed (the change is logged), else refuse


@dataclasses.dataclass
class PPOConfig:
    policy: ModelSection = dataclasses.field(default_factory=lambda: ModelSection(dtype="float32"))
    reward: RewardSection = dataclasses.field(default_factory=RewardSection)
    rollout: RolloutSection = dataclasses.field(default_factory=RolloutSection)
    ppo: PPOSection = dataclasses.field(default_factory=PPOSection)
    kl: KLSection = dataclasses.field(default_factory=KLSection)
    energy: EnergySection = dataclasses.field(default_factory=EnergySection)
    length_penalty: LengthPenaltySection = dataclasses.field(default_factory=LengthPenaltySection)
    ibl: IBLSection = dataclasses.field(default_factory=IBLSection)
    detect: DetectSection = dataclasses.field(default_factory=DetectSection)
    data: PPODataSection = dataclasses.field(default_factory=PPODataSection)
    train: PPOTrainSection = dataclasses.field(default_factory=PPOTrainSection)
    mesh: MeshSection = dataclasses.field(default_factory=MeshSection)

    def __post_init__(self):
        ck.check(self, PPO_RULES)
        if self.rollout.batch_size % self.ppo.minibatches:
            raise ValueError(
                f"rollout.batch_size={self.rollout.batch_size} must be a multiple of "
                f"ppo.minibatches={self.ppo.minibatches}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Keys with a fixed set of choices or a valid range, checked when the config is built (before any model loads).
PPO_RULES = [
    *ck.model_section_rules("policy"),
    ("reward.kind", ck.one_of("model", "gold")), ("reward.gold", ck.one_of(None, "world")),
    ("reward.clip", ck.optional(ck.positive)),
    ("rollout.batch_size", ck.count), ("rollout.max_new_tokens", ck.count), ("rollout.temperature", ck.positive),
    ("rollout.top_k", ck.whole), ("rollout.top_p", ck.within(0, 1)), ("rollout.top_p", ck.positive),
    ("ppo.epochs", ck.count), ("ppo.minibatches", ck.count), ("ppo.clip", ck.positive),
    ("ppo.value_clip", ck.optional(ck.positive)),
    ("ppo.gamma", ck.probability), ("ppo.lam", ck.probability), ("ppo.entropy_coef", ck.non_negative),
    ("ppo.actor_lr", ck.positive), ("ppo.critic_lr", ck.positive), ("ppo.grad_clip", ck.positive),
    ("ppo.critic_init", ck.one_of("sft", "reward_model")),
    ("kl.coef", ck.non_negative), ("kl.estimator", ck.one_of(*KL_ESTIMATORS)), ("kl.target", ck.positive),
    ("kl.horizon", ck.positive),
    ("energy.eta", ck.non_negative), ("energy.site", ck.one_of(*ENERGY_SITES)),
    ("energy.sft_energy", ck.one_of("cached", "regenerate")), ("energy.sft_samples", ck.whole),
    ("ibl.coef", ck.non_negative), ("ibl.covariance", ck.one_of("empirical", "ledoit_wolf")),
    ("ibl.ridge", ck.non_negative),
    ("ibl.max_prompts", ck.whole),
    ("detect.every", ck.whole), ("detect.num_prompts", ck.at_least(3)),
    ("detect.k", ck.optional(ck.whole_at_least(2))),
    ("detect.k_rule", ck.one_of("silhouette", "sqrt")), ("detect.alpha", ck.within(0, 1, open_high=True)),
    ("data.max_prompt_length", ck.count), ("data.pad_to", ck.one_of("bucket", "max_length")),
    ("data.bucket_multiple", ck.count),
    ("train.iterations", ck.count), ("train.log_every", ck.count), ("train.save_every", ck.count),
    ("train.keep_checkpoints", ck.count), ("train.report_to", ck.list_of(*REPORTERS)),
]  # fmt: skip
