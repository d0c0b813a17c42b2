"""Reward-model methods, one object each: the registry that the trainer, the config, the CLI and the lab read.

A method names its head (``"scalar"``, ``"ib"``, ``"odin"``), its training scheme (``"single"``; ``"ensemble"``:
K members on the same batches; ``"warm"``: K members from one init, one data order each, weights averaged at
export), its loss on one member's chosen / rejected head outputs, and optionally a transform of the pair list
before tokenizing (RRM's augmentation) and trainer callbacks (the prompt-free priority of reward decomposition).

Adding a method is one entry here (and its test)::

    register(RewardModelMethod(
        name="my-bt", head="scalar", scheme="single", loss=my_loss, summary="what it does",
    ))

where ``my_loss(model, chosen, rejected, batch, loss_cfg) -> (scalar loss, {metric: scalar})``; ``chosen`` and
``rejected`` are :class:`inform_jax.models.heads.HeadOutput` with ``reward`` [B], ``batch`` holds ``weights`` [B]
and ``response_lengths`` [B, 2] (and ``margins`` [B] with ``loss.margin: column``), ``loss_cfg`` is the config's
``loss`` section; :func:`pair_margin` gives the margin a loss subtracts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from inform_jax.losses import bradley_terry_loss, inform_loss, odin_loss, preference_accuracy
from inform_jax.losses._utils import weighted_mean

HEADS = ("scalar", "ib", "odin")
SCHEMES = ("single", "ensemble", "warm")

# loss(model, chosen HeadOutput, rejected HeadOutput, batch, loss section) -> (loss, metrics)
MethodLoss = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class RewardModelMethod:
    """One reward-model method.

    name: the config's ``method`` value; head: one of HEADS; scheme: one of SCHEMES; loss: see the module
    docstring; summary: one line for ``--help``; pair_transform(config) -> fn(pairs) -> pairs, applied to the
    loaded pair list before tokenizing (None: none); callbacks(config, train_arrays, pad_id) -> [(every, fn)],
    trainer callbacks run every ``every`` steps as ``fn(trainer, step)`` (None: none); sample_latent: an IB head
    decodes a reparameterized sample of its latent in training (False: its mean, the noise off).
    """

    name: str
    head: str
    scheme: str
    loss: MethodLoss
    summary: str
    pair_transform: Callable | None = None
    callbacks: Callable | None = None
    sample_latent: bool = True

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"method {self.name!r}: head must be one of {HEADS}, got {self.head!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"method {self.name!r}: scheme must be one of {SCHEMES}, got {self.scheme!r}")

    @property
    def samples_latent(self) -> bool:
        """Training samples the IB latent (a PRNG key reaches the head); evaluation always decodes the mean."""
        return self.head == "ib" and self.sample_latent


METHODS: dict[str, RewardModelMethod] = {}


def register(method: RewardModelMethod) -> RewardModelMethod:
    """Add a method to the registry (a name already taken raises)."""
    if method.name in METHODS:
        raise ValueError(f"reward-model method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> RewardModelMethod:
    """The registered method called ``name``; an unknown name raises with the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}") from None


def describe_methods() -> str:
    """One line per method (for --help)."""
    return "\n".join(f"  {m.name}: {m.summary}" for m in METHODS.values())


# ------------------------------------------------------------------------------------------ losses


def pair_margin(batch: dict, loss_cfg):
    """The margin of ``loss.margin``: the batch's per-pair ``margins`` [B] for ``column`` (TRL's margin column),
    else the configured number (or None)."""
    return batch["margins"] if loss_cfg.margin == "column" else loss_cfg.margin


def bradley_terry_member_loss(model, chosen, rejected, batch, loss_cfg):
    """-log sigmoid(r_c - r_r - margin), weighted by the batch's pair weights."""
    margin = pair_margin(batch, loss_cfg)
    loss = bradley_terry_loss(chosen.reward, rejected.reward, margin=margin, weights=batch["weights"])
    return loss, {"bt_loss": loss, "accuracy": preference_accuracy(chosen.reward, rejected.reward)}


def inform_member_loss(model, chosen, rejected, batch, loss_cfg):
    """InfoRM: Bradley-Terry on the rewards decoded from sampled latents + beta * KL of both latents to N(0, I)."""
    return inform_loss(
        chosen.reward, rejected.reward, chosen.latent_mean, chosen.latent_logvar, rejected.latent_mean,
        rejected.latent_logvar, beta=loss_cfg.beta, kl_reduction=loss_cfg.kl_reduction,
        margin=pair_margin(batch, loss_cfg), weights=batch["weights"],
    )  # fmt: skip


def odin_member_loss(model, chosen, rejected, batch, loss_cfg):
    """ODIN: BT on quality + length rewards, the length head correlated with length, the heads orthogonal."""
    lengths = batch["response_lengths"].astype(jnp.float32)
    return odin_loss(
        chosen.reward, rejected.reward, chosen.length_reward, rejected.length_reward, lengths[:, 0], lengths[:, 1],
        length_corr_coef=loss_cfg.odin_length_coef, orthogonal_coef=loss_cfg.odin_orthogonal_coef,
        head_weights=model.head.head_weights(), weights=batch["weights"],
    )  # fmt: skip


def hinge_member_loss(model, chosen, rejected, batch, loss_cfg):
    """Ranking hinge max(0, m - (r_c - r_r)) with m = loss.margin (1 when unset): pairs ranked by more than the
    margin give no gradient, so confidently separated (possibly mislabeled) pairs stop pulling the rewards apart."""
    margin = 1.0 if loss_cfg.margin is None else pair_margin(batch, loss_cfg)
    gap = chosen.reward.astype(jnp.float32) - rejected.reward.astype(jnp.float32)
    loss = weighted_mean(jnp.maximum(0.0, margin - gap), batch["weights"])
    return loss, {"hinge_loss": loss, "accuracy": preference_accuracy(chosen.reward, rejected.reward)}


# ------------------------------------------------------------------------------------------ data and callbacks


def rrm_pair_transform(config):
    """RRM: the pairs plus ``decomposition.rrm_augment`` x N pairs whose rejected side answers another prompt."""
    from inform_jax.data.rrm import rrm_augment

    def rrm(pairs):
        return rrm_augment(pairs, factor=config.decomposition.rrm_augment, seed=config.train.seed)

    return rrm


def prompt_free_priority_callbacks(config, train_arrays, pad_id: int = 0) -> list:
    """Reward decomposition's prioritized training: reweight the pairs by their prompt-free gap dr2."""
    from inform_jax.eval.decomposition import PairTokens
    from inform_jax.train.rm.priority import PromptFreePriority

    priority = PromptFreePriority(
        config.decomposition, PairTokens(train_arrays, pad_id), config.train.output_dir, seed=config.train.seed
    )
    return [(priority.every, priority)]


# ------------------------------------------------------------------------------------------ the registry

for _method in (
    RewardModelMethod("standard", "scalar", "single", bradley_terry_member_loss, "Bradley-Terry, scalar head"),
    RewardModelMethod("inform", "ib", "single", inform_member_loss, "InfoRM: IB latent, BT + beta * KL"),
    RewardModelMethod("odin", "odin", "single", odin_member_loss,
                      "quality + length heads; RL reads the quality head"),
    RewardModelMethod("ensemble", "scalar", "ensemble", bradley_terry_member_loss,
                      "loss.num_members members on the same batches, reward aggregated by loss.aggregation"),
    RewardModelMethod("warm", "scalar", "warm", bradley_terry_member_loss,
                      "members from one init with one data order each, weights averaged at export"),
    RewardModelMethod("inform-mean", "ib", "single", inform_member_loss,
                      "InfoRM decoding the latent's mean in training (the noise off): the stochastic encoder's "
                      "ablation", sample_latent=False),
    RewardModelMethod("inform+ensemble", "ib", "ensemble", inform_member_loss, "ensemble of InfoRM members"),
    RewardModelMethod("inform+warm", "ib", "warm", inform_member_loss, "WARM of InfoRM members"),
    RewardModelMethod("dir", "scalar", "single", bradley_terry_member_loss,
                      "BT with pairs prioritized by a small prompt-free gap (reward decomposition)",
                      callbacks=prompt_free_priority_callbacks),
    RewardModelMethod("inform+dir", "ib", "single", inform_member_loss, "InfoRM with the prompt-free priority",
                      callbacks=prompt_free_priority_callbacks),
    RewardModelMethod("rrm", "scalar", "single", bradley_terry_member_loss,
                      "RRM: pairs augmented with other prompts' responses as rejected",
                      pair_transform=rrm_pair_transform),
    RewardModelMethod("hinge", "scalar", "single", hinge_member_loss,
                      "ranking hinge max(0, margin - (r_c - r_r)), margin loss.margin (default 1)"),
):  # fmt: skip
    register(_method)
