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
from inform_jax.train.config import MeshSection, ModelSection, allow_config_change_option, report_to_option
from inform_jax.train.config_help import describe_config, option, section
from inform_jax.train.tracking import REPORTERS


@dataclasses.dataclass
class RewardSection:
    kind: str = option("model", "model: a reward-model folder (reward.path) | gold: the synthetic world's gold reward")
    path: str | None = option(None, "reward model folder (train-rm's RUN/final, save_reward_model output)")
    gold: str | None = option(
        None,
        "world: log the synthetic world's gold reward and hacked flag beside the proxy (null: off)",
    )
    gold_path: str | None = option(
        None,
        "a gold reward model folder, scored on the decoded text and logged as gold_reward",
    )
    clip: float | None = option(
        5.0,
        "clamp of the final sequence reward (after penalties) to [-clip, clip] (null: none)",
    )
    normalize: str = option(
        "none",
        "none: the raw proxy score | sft: (score - mean) / std over SFT responses sampled like rollouts before the "
        "first iteration (ensembles: each member by its own, before aggregation); stored as reward_norm.npy",
    )
    normalize_samples: int = option(
        256, "reward.normalize=sft: SFT responses scored for the mean / std (rounded up to whole rollout batches)"
    )
    normalize_cache: str = option(
        "",
        "reward.normalize=sft: a folder where the mean / std are also kept, keyed by the prompts, the SFT model, the "
        "reward model's parameters, the seed and the settings that change them, so runs against the same reward model "
        "compute them once; empty: the run folder only (a parameter-free score function, the world's gold reward, is "
        "never shared). The key hashes every reward parameter (gathered to each host): cheap for small models, a full "
        "gather for billions. On many hosts, a folder every host sees",
    )
    missing_eos: str = option(
        "score",
        "a response cut at max_new_tokens (no EOS): score (as it is) | append_eos (scored with EOS appended) | "
        "penalty (score - reward.missing_eos_penalty, TRL's missing_eos_penalty)",
    )
    missing_eos_penalty: float = option(1.0, "reward.missing_eos=penalty: subtracted from a truncated response's score")


@dataclasses.dataclass
class RolloutSection:
    batch_size: int = option(32, "prompts per PPO iteration")
    max_new_tokens: int = option(24, "tokens generated per response")
    temperature: float = option(1.0, "sampling temperature")
    top_k: int = option(0, "sample from the k most likely tokens (0: all)")
    top_p: float = option(1.0, "nucleus sampling mass (1: off)")
    greedy: bool = option(False, "greedy decoding instead of sampling")


@dataclasses.dataclass
class PPOSection:
    epochs: int = option(1, "passes over each rollout batch")
    minibatches: int = option(1, "minibatches per epoch (rollout.batch_size must be a multiple)")
    clip: float = option(0.2, "policy ratio clip epsilon")
    value_clip: float = option(0.2, "value-function clip around the old values (null: unclipped)")
    gamma: float = option(1.0, "discount")
    lam: float = option(0.95, "GAE lambda")
    entropy_coef: float = option(0.0, "entropy bonus weight")
    actor_lr: float = option(1e-4, "policy learning rate (the EPPO authors use 5e-7 for 7B models)")
    critic_lr: float = option(1e-4, "critic learning rate (the EPPO authors use 1e-6 for 7B models)")
    grad_clip: float = option(1.0, "global-norm gradient clipping")
    whiten_advantages: bool = option(True, "normalize advantages to zero mean and unit variance per batch")
    critic_init: str = option(
        "sft",
        "sft: the critic starts from the SFT model | reward_model: from the reward model folder's backbone",
    )


@dataclasses.dataclass
class KLSection:
    coef: float = option(0.0, "per-token KL penalty coefficient (PPO w/ KL sets it > 0)")
    estimator: str = option("k1", "KL estimator: k1 | k2 | k3")
    adaptive: bool = option(False, "adapt coef toward target (Ziegler et al.'s controller)")
    target: float = option(6.0, "adaptive KL: the target KL")
    horizon: int = option(10000, "adaptive KL: the controller's horizon")


@dataclasses.dataclass
class EnergySection:
    eta: float = option(
        0.0,
        "EPPO: reward r - eta * |dE_sft - dE_policy| (the authors: 2.0); 0: plain PPO; negative: the sign flipped "
        "(a planted broken method that rewards moving the energy, for validating comparisons)",
    )
    site: str = option(
        "residual",
        "where the final-layer energy is read: residual (the paper's) | mlp (the authors' code)",
    )
    normalize: bool = option(True, "divide the L1 energy by the width (the scale eta = 2.0 was set for)")
    sft_energy: str = option(
        "cached",
        "cached: once per prompt from the SFT model's greedy response | regenerate: every iteration",
    )
    sft_samples: int = option(0, "0: the SFT model's greedy response; k > 0: average over k sampled responses")
    reference: str = option(
        "sampled",
        "dE_SFT from: sampled (the SFT model's own responses, per sft_energy / sft_samples; the seed paper's, with "
        "several samples per prompt) | teacher_forced (the SFT model on the policy's own sequence: 0 when equal)",
    )
    reference_cache: str = option(
        "",
        "folder where the sampled dE_SFT per prompt is kept, keyed by the prompts, the SFT model, the seed and the "
        "settings that change it; empty: the run folder. Runs on the same SFT model and prompts can share one (on many "
        "hosts, a folder every host sees, like the run folder)",
    )


@dataclasses.dataclass
class IBLSection:
    """InfoRM journal extension's IBL: r - coef * Mahalanobis(latent; SFT latents), latents of the reward model
    (InfoRM: IB latent mean; standard RM: final hidden state) on the SFT model's greedy responses to the prompts."""

    coef: float = option(
        0.0,
        "IBL: reward r - coef * Mahalanobis distance of the reward model's latent to the SFT latents (0: off)",
    )
    covariance: str = option("empirical", "empirical (the authors': sample covariance + ridge * I) | ledoit_wolf")
    ridge: float = option(1e-6, "ridge added to the covariance diagonal")
    max_prompts: int = option(0, "SFT responses that fit the distribution: the first N prompts (0: all)")


@dataclasses.dataclass
class DetectSection:
    """Overoptimization detection during training: every `every` iterations, the policy's greedy responses to the
    first `num_prompts` prompts are embedded by the reward model and compared with the SFT model's (CSI, MOP),
    logged as csi, csi_per_sample, mop; latents saved under train.output_dir/detect/ for plots."""

    every: int = option(0, "iterations between CSI / MOP detection (0: off)")
    num_prompts: int = option(64, "detection: the first N prompts, answered greedily by the policy and the SFT model")
    k: int | None = option(None, "detection: k-means k (null: chosen by k_rule)")
    k_rule: str = option("silhouette", "detection: silhouette | sqrt, how k is chosen when k is null")
    alpha: float = option(0.1, "detection: MOP chi-square test level")


@dataclasses.dataclass
class LengthPenaltySection:
    enabled: bool = option(False, "the length-penalty baseline: r + sigma_running * (1 - L / N)")


@dataclasses.dataclass
class PPODataSection:
    prompts: str | None = option(None, "prompt file (.jsonl / .json / .parquet, column prompt: text or messages)")
    tokenizer: str | None = option(None, "tokenizer folder (default policy.path)")
    max_prompt_length: int = option(16, "prompt tokens (longer prompts keep their end)")
    pad_to: str = option("bucket", "bucket: each rollout's prompts cut to the longest one's bucket length | max_length")
    bucket_multiple: int = option(8, "bucket lengths are multiples of this")


@dataclasses.dataclass
class PPOTrainSection:
    iterations: int = option(100, "PPO iterations (rollout, then update)")
    seed: int = option(0, "seed for sampling and initialization")
    log_every: int = option(1, "iterations between metric lines in metrics.jsonl")
    save_every: int = option(50, "iterations between checkpoints")
    keep_checkpoints: int = option(2, "checkpoints kept")
    output_dir: str = option("runs/ppo", "run folder: checkpoints/, metrics.jsonl, config.yaml, final/")
    report_to: list[str] = report_to_option()
    progress: bool = option(True, "show a progress bar")
    allow_config_change: bool = allow_config_change_option()


@dataclasses.dataclass
class PPOConfig:
    policy: ModelSection = section(lambda: ModelSection(dtype="float32"))
    reward: RewardSection = section(RewardSection)
    rollout: RolloutSection = section(RolloutSection)
    ppo: PPOSection = section(PPOSection)
    kl: KLSection = section(KLSection)
    energy: EnergySection = section(EnergySection)
    length_penalty: LengthPenaltySection = section(LengthPenaltySection)
    ibl: IBLSection = section(IBLSection)
    detect: DetectSection = section(DetectSection)
    data: PPODataSection = section(PPODataSection)
    train: PPOTrainSection = section(PPOTrainSection)
    mesh: MeshSection = section(MeshSection)

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
    ("reward.clip", ck.optional(ck.positive)), ("reward.normalize", ck.one_of("none", "sft")),
    ("reward.normalize_samples", ck.whole_at_least(2)),
    ("reward.missing_eos", ck.one_of("score", "append_eos", "penalty")),
    ("reward.missing_eos_penalty", ck.non_negative),
    ("rollout.batch_size", ck.count), ("rollout.max_new_tokens", ck.count), ("rollout.temperature", ck.positive),
    ("rollout.top_k", ck.whole), ("rollout.top_p", ck.within(0, 1)), ("rollout.top_p", ck.positive),
    ("ppo.epochs", ck.count), ("ppo.minibatches", ck.count), ("ppo.clip", ck.positive),
    ("ppo.value_clip", ck.optional(ck.positive)),
    ("ppo.gamma", ck.probability), ("ppo.lam", ck.probability), ("ppo.entropy_coef", ck.non_negative),
    ("ppo.actor_lr", ck.positive), ("ppo.critic_lr", ck.positive), ("ppo.grad_clip", ck.positive),
    ("ppo.critic_init", ck.one_of("sft", "reward_model")),
    ("kl.coef", ck.non_negative), ("kl.estimator", ck.one_of(*KL_ESTIMATORS)), ("kl.target", ck.positive),
    ("kl.horizon", ck.positive),
    ("energy.eta", ck.finite), ("energy.site", ck.one_of(*ENERGY_SITES)),
    ("energy.sft_energy", ck.one_of("cached", "regenerate")), ("energy.sft_samples", ck.whole),
    ("energy.reference", ck.one_of("sampled", "teacher_forced")),
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


def describe_fields() -> str:
    """Every PPO config key with its default and meaning (for --help), from the fields' own help."""
    return describe_config(PPOConfig())
