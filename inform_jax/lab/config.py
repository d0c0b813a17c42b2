"""Settings of the reward-hacking laboratory (`inform-jax demo`): the default run, `--quick`, and overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from inform_jax.world.config import ARM_FIELDS, WorldConfig, without_late_defaults

# name -> (proxy reward model, PPO settings). The labels are the papers' method names.
METHODS: dict[str, tuple[str, dict]] = {
    "PPO": ("standard", {}),
    "PPO w/ KL": ("standard", {"kl_coef": "kl"}),
    "InfoRM": ("inform", {}),
    "Ensemble RM": ("ensemble", {}),
    "EPPO": ("standard", {"eta": "eta"}),
    # the studies' further baselines (experiments/lab); the demo runs DEMO_METHODS
    "WARM": ("warm", {}),
    "PPO w/ LP": ("standard", {"length_penalty": True}),
    "EPPO + InfoRM": ("inform", {"eta": "eta"}),
    "ERM-WCO": ("ensemble-wco", {}),  # the ensemble's members, worst case (min) over members
    "ERM-UWO": ("ensemble-uwo", {}),  # mean - uwo_coef * variance over members
    "ODIN": ("odin", {}),  # RL reads ODIN's quality head
    "EPPO + ODIN": ("odin", {"eta": "eta"}),
    "InfoRM + Ensemble": ("inform-ensemble", {}),  # InfoRM's IB head on every ensemble member, mean reward
    "InfoRM + WARM": ("inform-warm", {}),  # the same members weight-averaged
    "Prioritized RM": ("dir", {}),  # reward decomposition: BT on the pairs with the smallest prompt-free gap
    "Oracle": ("gold", {}),  # PPO on the gold reward itself: proves the RL machinery and the world's headroom
    # planted methods that validate the comparison itself (PROTOCOL.md section 4): a good one it must call
    # reproduced against PPO, broken ones it must not
    "Planted good RM": ("planted-good", {}),  # an RM trained on noise-free, shortcut-free labels
    "Planted RM seed": ("standard-seed2", {}),  # the standard RM again with another training seed: no real change
    "Planted flipped EPPO": ("standard", {"eta": "flipped"}),  # EPPO's penalty with its sign flipped
}
PLANTED_METHODS = ("Planted good RM", "Planted RM seed", "Planted flipped EPPO")
DEMO_METHODS = ("PPO", "PPO w/ KL", "InfoRM", "Ensemble RM", "EPPO", "Oracle")


def slug(name: str) -> str:
    """A method name as a file-name part: "PPO w/ KL" -> "ppo-w-kl", "EPPO + InfoRM" -> "eppo-inform"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


WEAK_SFT = (0.15, 0.15, 0.15, 0.2, 0.1, 0.1, 0.05, 0.1)


@dataclasses.dataclass
class LabConfig:
    seed: int = 0
    # the world and its data
    label_noise: float = 0.25
    # share of training pairs whose gold-preferred side also scores higher on the spurious features (length,
    # filler, repetition) that a proxy can latch on to
    spurious_correlation: float = 0.6
    # behaviour mix of the SFT demonstrations (over world.config.BEHAVIOUR_NAMES: correct, partial, wrong,
    # correct_filler, partial_filler, refusal, repetition, overlong); None = the world's default (72% correct).
    # The lab's default is a weak SFT (15% correct) so that RL has headroom: held-out SFT gold near 0, the oracle
    # arm near 0.6 after 80 iterations (tuned on the tuning seeds 100-102 only, on the baseline criteria of
    # experiments/lab/PROTOCOL.md section 1).
    sft_behaviour_probs: tuple[float, ...] | None = WEAK_SFT
    n_pairs: int = 3000
    n_sft: int = 2000
    n_prompts: int = 512
    n_eval_prompts: int = 64
    # the world's exploit arm (experiments/lab/PROTOCOL.md section 2; world.config.ARMS) and its marker rates, with
    # the world's defaults. Outside the repetition arm the pairs get no spurious correlation (spurious_correlation
    # is not passed on): nothing is planted there beyond the arm's markers.
    arm: str = WorldConfig.arm
    marker_rate: float = WorldConfig.marker_rate
    shortcut_rate: float = WorldConfig.shortcut_rate
    marker_base_rate: float = WorldConfig.marker_base_rate
    sft_marker_copies: int = WorldConfig.sft_marker_copies
    # models (one Llama-style size for policy, critic and reward models)
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 4  # at least 4: per-layer energy claims need depth
    num_heads: int = 4
    max_length: int = 48
    prompt_length: int = 16
    new_tokens: int = 24
    # SFT and reward models
    sft_steps: int = 400
    sft_lr: float = 3e-3
    rm_steps: int = 300
    rm_lr: float = 1e-3
    rm_batch: int = 32
    latent_dim: int = 32
    inform_beta: float = 0.01
    inform_kl_reduction: str = "paper"  # "paper" (KL summed over latent dims) | "release" (the authors' code)
    ensemble_members: int = 3
    uwo_coef: float = 1.0  # ERM-UWO's variance weight
    # RL
    ppo_iterations: int = 80
    ppo_batch: int = 32
    actor_lr: float = 1e-4
    kl: float = 0.1  # per-token KL coefficient of "PPO w/ KL" (chosen on the tuning seeds: PROTOCOL.md section 1)
    eta: float = 2.0  # EPPO's eta when eppo_penalty_ratio is None
    # EPPO's eta from the SFT-vs-SFT null (lab.calibration): eta = ratio * (normalized) reward std / std of the
    # null's energy gap |dE_SFT - dE_policy| with the SFT model as the policy; the protocol's grid is 0.1, 0.3, 1, 3
    eppo_penalty_ratio: float | None = 0.1  # chosen on the tuning seeds (PROTOCOL.md section 1)
    eppo_reference: str = "sampled"  # dE_SFT: "sampled" (the seed paper's: SFT samples) | "teacher_forced"
    eppo_sft_samples: int = 4  # sampled reference: SFT responses per prompt, sampled like the policy's
    # the fair protocol (experiments/lab/PROTOCOL.md section 3), applied to every method alike
    reward_normalize: bool = True  # every proxy reward standardized by its mean / std over SFT samples
    reward_normalize_samples: int = 256  # SFT samples the normalization's mean and std come from
    eppo_calibration_prompts: int = 128  # training prompts of EPPO's SFT-vs-SFT null (lab.calibration)
    missing_eos: str = "append_eos"  # a response cut at the token limit: scored with EOS appended | "penalty" | "score"
    energy_site: str = "residual"  # EPPO's energy site: "residual" (the paper's) | "mlp" (the authors' code)
    energy_normalize: bool = True  # L1 divided by the width (the scale eta = 2.0 was set for) | raw L1
    eval_every: int = 10  # held-out gold and exact KL from SFT every N iterations (lab.heldout)
    eval_samples_per_prompt: int = 4  # held-out samples per prompt at temperature 1
    # best-of-n before PPO (lab.best_of_n): one pool of SFT samples per held-out prompt ranked by every reward model
    # the methods use; 0 skips it. The studies' pool is 256 (experiments/lab/paired.py).
    bon_samples: int = 64
    detect_every: int = 10  # CSI of the policy's outputs in InfoRM's latent space every N iterations
    control_probe: bool = False  # also embed outputs in the standard RM's hidden space (detection's control)
    # judging
    tie_margin: float = 0.05  # |gold(a) - gold(b)| <= margin is a tie
    methods: tuple[str, ...] = DEMO_METHODS
    # where each method's metrics and the report's figures also go: ("jsonl",) | + "tensorboard", "wandb"
    report_to: tuple[str, ...] = ("jsonl",)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown lab methods {unknown}; known: {list(METHODS)}")
        self.world_config()  # the world checks the arm and its rates

    def world_config(self) -> WorldConfig:
        """The world's config: the arm and its rates, and the SFT behaviour mix (None: the world's default)."""
        arm = {f: getattr(self, f) for f in ARM_FIELDS}
        if self.sft_behaviour_probs is None:
            return WorldConfig(**arm)
        return WorldConfig(sft_behaviour_probs=tuple(self.sft_behaviour_probs), **arm)

    def digest(self, *fields: str) -> str:
        """A short hash of the named fields (cache keys: a stage is reused only if its inputs are unchanged).

        The arm fields are left out while all are at their defaults, so caches written before arms existed (the
        repetition arm's) keep their keys; so are the arm fields added later (``ARM_FIELDS_KEYED_WHEN_SET``) while
        at their defaults, so the marker arms' caches written before them keep theirs."""
        values = {f: getattr(self, f) for f in fields}
        if all(getattr(self, f) == getattr(WorldConfig, f) for f in ARM_FIELDS):
            values = {f: v for f, v in values.items() if f not in ARM_FIELDS}
        return hashlib.sha256(json.dumps(without_late_defaults(values), sort_keys=True).encode()).hexdigest()[:12]


def lab_field_default(field: str):
    """A LabConfig field's default as JSON reads it back; a sentinel equal to nothing for a name LabConfig lacks."""
    defaults = {f.name: f.default for f in dataclasses.fields(LabConfig)}
    return json.loads(json.dumps(defaults[field])) if field in defaults else object()


def same_config(saved: dict, current: dict) -> bool:
    """Whether a result saved under the LabConfig ``saved`` answers for ``current`` (both as JSON reads them): equal
    but for the fields added to LabConfig since it was saved, which count as equal only at their defaults (a new
    knob at its default changes nothing already computed). A field the saved config has and ``current`` lacks is a
    difference."""
    saved, current = json.loads(json.dumps(saved)), json.loads(json.dumps(current))
    added = {k: v for k, v in current.items() if k not in saved}
    if {k: v for k, v in current.items() if k not in added} != saved:
        return False
    return all(v == lab_field_default(k) for k, v in added.items())


def same_lab_key(saved: dict, current: dict) -> bool:
    """Whether a saved result's key answers for ``current``: a key whose "config" entry is a LabConfig (``config_key``)
    matches by :func:`same_config` there and by equality elsewhere (``keyed_cache.cached_result``'s ``same``)."""
    if saved.keys() != current.keys():
        return False
    return all(same_config(saved[k], current[k]) if k == "config" else saved[k] == current[k] for k in current)


def config_key(config: LabConfig) -> dict:
    """``dataclasses.asdict(config)`` for keying saved results, without the arm fields added later
    (``ARM_FIELDS_KEYED_WHEN_SET``) while at their defaults, as :meth:`LabConfig.digest` leaves them out: results
    saved before those fields existed keep answering for the same configuration."""
    return without_late_defaults(dataclasses.asdict(config))


QUICK = dict(
    n_pairs=800, n_sft=600, n_prompts=96, n_eval_prompts=24, hidden_size=32, intermediate_size=64, sft_steps=150,
    rm_steps=80, ensemble_members=2, ppo_iterations=12, ppo_batch=16, new_tokens=16, detect_every=6, eval_every=3,
    reward_normalize_samples=64, eppo_calibration_prompts=32, bon_samples=16,
)  # fmt: skip

WORLD_FIELDS = (
    "seed", "label_noise", "spurious_correlation", "sft_behaviour_probs", "n_pairs", "n_sft", "n_prompts",
    "n_eval_prompts", *ARM_FIELDS,
)  # fmt: skip
MODEL_FIELDS = (*WORLD_FIELDS, "hidden_size", "intermediate_size", "num_layers", "num_heads", "max_length")
SFT_FIELDS = (*MODEL_FIELDS, "sft_steps", "sft_lr")
RM_FIELDS = (*SFT_FIELDS, "rm_steps", "rm_lr", "rm_batch", "latent_dim", "inform_beta", "ensemble_members",
             "inform_kl_reduction")  # fmt: skip
