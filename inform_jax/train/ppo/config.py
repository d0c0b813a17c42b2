"""PPO / EPPO configuration (YAML + section.key=value overrides, like the reward-model config).

Defaults follow the EPPO authors' DeepSpeed-Chat settings where docs/reference.md states them (gamma 1, lambda
0.95, clip 0.2, value clip 0.2, 1 PPO epoch, eta 2.0, reward clamp 5, per-token KL coefficient 0 for both
PPO and EPPO); learning rates are for the small synthetic world and need lowering for 7B models
(authors: actor 5e-7, critic 1e-6).
"""

from __future__ import annotations

import dataclasses

from inform_jax.losses import ENERGY_SITES, KL_ESTIMATORS
from inform_jax.train.config import MeshSection, ModelSection


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


@dataclasses.dataclass
class PPOTrainSection:
    iterations: int = 100
    seed: int = 0
    log_every: int = 1
    save_every: int = 50
    keep_checkpoints: int = 2
    output_dir: str = "runs/ppo"
    progress: bool = True


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
        if self.reward.kind not in ("model", "gold"):
            raise ValueError(f"reward.kind must be 'model' or 'gold', got {self.reward.kind!r}")
        if self.reward.gold not in (None, "world"):
            raise ValueError(f"reward.gold must be null or 'world' (the synthetic world's), got {self.reward.gold!r}")
        if self.kl.estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl.estimator must be one of {KL_ESTIMATORS}, got {self.kl.estimator!r}")
        if self.energy.site not in ENERGY_SITES:
            raise ValueError(f"energy.site must be one of {ENERGY_SITES}, got {self.energy.site!r}")
        if self.rollout.batch_size % self.ppo.minibatches:
            raise ValueError("rollout.batch_size must be a multiple of ppo.minibatches")
        if self.energy.sft_energy not in ("cached", "regenerate"):
            raise ValueError(f"energy.sft_energy must be 'cached' or 'regenerate', got {self.energy.sft_energy!r}")
        if self.ibl.covariance not in ("empirical", "ledoit_wolf"):
            raise ValueError(f"ibl.covariance must be 'empirical' or 'ledoit_wolf', got {self.ibl.covariance!r}")
        if self.detect.every < 0 or self.detect.num_prompts < 3:
            raise ValueError("detect.every must be >= 0 and detect.num_prompts >= 3")
        if self.ppo.critic_init not in ("sft", "reward_model"):
            raise ValueError(f"ppo.critic_init must be 'sft' or 'reward_model', got {self.ppo.critic_init!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
