"""PPO and EPPO over a device mesh: rollouts with the KV-cache sampler, one jitted scoring pass, jitted
minibatch updates of actor and critic, orbax checkpoints with exact resume.

Per iteration: B prompts -> responses (N tokens, EOS included in the action mask) -> one forward pass each
of actor, reference and critic over [B, P + N] plus the reward -> per-token KL (k1/k2/k3, fixed or adaptive
coefficient), sequence reward with optional length penalty (LP), IBL's latent-outlier penalty, or EPPO's energy penalty
`r - eta * |dE_final^SFT(x) - dE_final^policy(x, y)|` (clamped), placed at the last response token ->
GAE (reverse scan) -> `ppo.epochs` x `ppo.minibatches` clipped policy / value updates.

dE^SFT(x) is the reference (SFT) model's final-layer energy on its own greedy response to x. With
`energy.sft_energy: cached` it is computed once per prompt before training and stored beside the run,
so EPPO costs one energy read per rollout over PPO (the policy energy comes from the scoring pass). With
`energy.reference: teacher_forced` dE^SFT is the reference model's energy on the policy's own sequence, read from
the scoring pass's reference forward (see :mod:`inform_jax.train.ppo.reference`).

The proxy score may be normalized by its mean and std over SFT samples (`reward.normalize: sft`, each ensemble
member before aggregation), and a response cut at the token limit scored with EOS appended or penalized
(`reward.missing_eos`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from inform_jax.data.buckets import bucket_lengths, cut, padded_length, padding_side
from inform_jax.losses import (
    GaussianReference,
    adaptive_kl_coef,
    energy_from_output,
    entropy,
    fit_gaussian_reference,
    layer_energy,
    masked_mean,
    policy_loss,
    ppo_advantages,
    response_token_mask,
    shape_rewards,
    value_loss,
)
from inform_jax.models import CausalLM, make_mesh, shard_module
from inform_jax.models.decoder import response_logits
from inform_jax.models.layers import Linear
from inform_jax.models.reward_model import EnsembleRewardModel, normalize_scores
from inform_jax.models.sampler import generate
from inform_jax.models.sharding import constrain_batch, shard_rows
from inform_jax.train.batches import batch_indices, take
from inform_jax.train.checkpoints import CheckpointStore
from inform_jax.train.loop import LoopSettings, ensure_finite, fit_loop
from inform_jax.train.metrics_log import MetricsLog
from inform_jax.train.ppo.config import PPOConfig
from inform_jax.train.ppo.detect import TrainingDetector
from inform_jax.train.ppo.reference import SFTReference
from inform_jax.train.rm.step import optimizer_shardings
from inform_jax.train.run_folder import write_run_config

# score_fn(reward_params, prompt_ids, prompt_mask, response_ids, response_mask) -> [B] rewards
ScoreFn = Callable[..., jax.Array]
Callback = tuple[int, Callable[["PPOTrainer", int, dict, dict], None]]


class ValueModel(nnx.Module):
    """Critic: a decoder backbone and a linear value head on every position. [B, T] -> [B, T] float32."""

    def __init__(self, backbone: CausalLM, *, rngs: nnx.Rngs):
        self.backbone = backbone
        self.head = Linear(
            backbone.config.hidden_size, 1, axes=("embed", None), use_bias=True, dtype=jnp.float32,
            param_dtype=jnp.float32, std=0.0, rngs=rngs,
        )  # fmt: skip

    def __call__(self, input_ids, attention_mask):
        out = self.backbone(input_ids, attention_mask, compute_logits=False)
        return self.head(out.last_hidden_state.astype(jnp.float32))[..., 0]


@functools.lru_cache(maxsize=32)
def reward_model_score_fn(reward_graphdef) -> ScoreFn:
    """Score with a RewardModel / EnsembleRewardModel (InfoRM: latent mean; ODIN: quality head).

    Returns (reward [B], features [B, F]): a single model's detection features (InfoRM: IB latent mean; other
    heads: the final hidden state), used by IBL and CSI/MOP; None for ensembles.

    Two keywords, used by ``reward.normalize=sft`` (the function is marked ``member_wise``): ``norm`` = (mean [K],
    std [K]) normalizes each of the K members (K = 1 for one model) before an ensemble's aggregation; ``members``
    returns the raw rewards [K, B] of every member instead of the aggregate (to measure those statistics).

    One function per graph definition (cached): trainers of reward models with the same structure share their
    jitted programs (:func:`shared_programs`).
    """

    def score(params, prompt_ids, prompt_mask, response_ids, response_mask, *, norm=None, members=False):
        model = nnx.merge(reward_graphdef, params)
        ids = jnp.concatenate([prompt_ids, response_ids], axis=1)
        mask = jnp.concatenate([prompt_mask, response_mask], axis=1)
        if isinstance(model, EnsembleRewardModel):
            if members:
                return model.member_outputs(ids, mask).reward, None
            return model(ids, mask, member_norm=norm).reward, None
        out = model(ids, mask)
        features = out.head.latent_mean if out.head.latent_mean is not None else out.backbone.pooled_hidden
        reward = out.reward if norm is None else normalize_scores(out.reward, *norm)
        return (reward[None] if members else reward), features.astype(jnp.float32)

    score.member_wise = True
    score.graph = reward_graphdef  # what the score's cache keys name besides the parameters (precision, head)
    return score


def callable_score_fn(fn: Callable) -> ScoreFn:
    """Wrap fn(prompt_ids, prompt_mask, response_ids, response_mask) -> [B] (e.g. the world's gold reward)."""
    return lambda params, *args: fn(*args)


def _split_score(out) -> tuple[jax.Array, jax.Array | None]:
    """A score function's output: [B] rewards, or (rewards [B], features [B, F] or None)."""
    return tuple(out) if isinstance(out, tuple) else (out, None)


def truncated_rows(response_ids, response_mask, eos_id: int | None) -> jax.Array:
    """[B] bool: the responses [B, N] with no EOS among their valid tokens (cut at max_new_tokens); all of them
    when there is no EOS id."""
    if eos_id is None:
        return jnp.ones(response_ids.shape[:1], bool)
    return ~jnp.any((response_ids == eos_id) & (response_mask != 0), axis=1)


def append_eos(response_ids, response_mask, eos_id: int, pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Responses [B, N] with EOS written after the last token of each truncated row, into a buffer one longer
    ([B, N + 1]: a full response has no room left in its own); other rows only gain a pad column. The reward of a
    truncated response is then read at an EOS, as for a finished one. Returns (ids, mask) [B, N + 1]."""
    batch, width = response_ids.shape
    ids = jnp.concatenate([response_ids, jnp.full((batch, 1), pad_id, response_ids.dtype)], axis=1)
    mask = jnp.concatenate([response_mask, jnp.zeros((batch, 1), response_mask.dtype)], axis=1)
    lengths = jnp.sum(response_mask != 0, axis=1)
    at = (jnp.arange(width + 1) == lengths[:, None]) & truncated_rows(response_ids, response_mask, eos_id)[:, None]
    return jnp.where(at, eos_id, ids), jnp.where(at, 1, mask).astype(response_mask.dtype)


class PPOState(NamedTuple):
    """Everything a PPO run carries from one iteration to the next; a checkpoint is this state.

    actor, critic: parameter pytrees; actor_opt, critic_opt: their optimizer states; kl_coef: [] float32, the
    per-token KL coefficient (adapted when kl.adaptive); score_std: [] float32, the running std of the proxy scores
    (the length penalty's scale). All global arrays on the trainer's mesh (the scalars replicated).
    """

    actor: Any
    critic: Any
    actor_opt: Any
    critic_opt: Any
    kl_coef: jax.Array
    score_std: jax.Array


class Rollout(NamedTuple):
    """One iteration's experience, as the clipped updates read it. B rollouts, P prompt and N response tokens.

    sequences, sequence_mask: [B, P + N] prompt and response; response_mask: [B, N] the response's action tokens;
    old_logprobs, old_values, advantages, returns: [B, N] float32.
    """

    sequences: jax.Array
    sequence_mask: jax.Array
    response_mask: jax.Array
    old_logprobs: jax.Array
    old_values: jax.Array
    advantages: jax.Array
    returns: jax.Array


class Scored(NamedTuple):
    """One jitted pass over a rollout: everything the rewards, advantages and logs need. [B, N] unless noted."""

    logprobs: jax.Array
    ref_logprobs: jax.Array
    values: jax.Array
    score: jax.Array  # [B] proxy reward (normalized with reward.normalize=sft)
    energy: jax.Array  # [B] policy final-layer energy (the configured site)
    policy_layer_energy: jax.Array  # [B, L]
    ref_layer_energy: jax.Array  # [B, L]
    features: jax.Array | None  # [B, F] the reward model's detection features (IBL), None without them
    truncated: jax.Array  # [B] bool: no EOS (cut at max_new_tokens)
    ref_energy: jax.Array | None  # [B] the SFT model's energy on this sequence (energy.reference=teacher_forced)


def _response_logprobs(logits, sequences, prompt_len):
    """Log-probs of the response tokens [B, N] from the logits that predict them ([B, N, V], `response_logits`)."""
    logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logprobs, sequences[:, prompt_len:, None], axis=-1)[..., 0]


def ppo_optimizers(config: PPOConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """Actor and critic optimizers: clipping by global norm, then Adam (b1 0.9, b2 0.95) at their learning rates."""
    p = config.ppo

    def make(lr):
        return optax.chain(optax.clip_by_global_norm(p.grad_clip), optax.adam(lr, b1=0.9, b2=0.95))

    return make(p.actor_lr), make(p.critic_lr)


def make_ppo_update(config: PPOConfig, actor_graph, critic_graph, actor_tx, critic_tx):
    """update(actor_params, critic_params, actor_opt, critic_opt, minibatch) -> (the four, updated; metrics).

    One clipped policy-and-value step on a :class:`Rollout` minibatch of M rollouts. Not jitted: the trainer jits
    it with donated buffers, and the planner compiles it ahead of time for a TPU topology. The prompt length is
    the sequences' width less the responses' (a batch's prompts are cut to their bucket length).
    """
    p = config.ppo

    def update(actor_params, critic_params, actor_opt, critic_opt, batch):
        mask = batch.response_mask
        prompt_len = batch.sequences.shape[1] - mask.shape[1]

        def loss_fn(params):
            actor_params, critic_params = params
            actor = nnx.merge(actor_graph, actor_params)
            _, logits = response_logits(actor, batch.sequences, batch.sequence_mask, prompt_len)
            logprobs = _response_logprobs(logits, batch.sequences, prompt_len)
            pg, aux = policy_loss(logprobs, batch.old_logprobs, batch.advantages, mask, p.clip)
            ent = entropy(logits, mask)
            values = nnx.merge(critic_graph, critic_params)(batch.sequences, batch.sequence_mask)
            vf = value_loss(values[:, prompt_len - 1 : -1], batch.old_values, batch.returns, mask, p.value_clip)
            return pg - p.entropy_coef * ent + vf, {"policy_loss": pg, "value_loss": vf, "entropy": ent, **aux}

        (_, metrics), (actor_grads, critic_grads) = jax.value_and_grad(loss_fn, has_aux=True)(
            (actor_params, critic_params)
        )
        updates, actor_opt = actor_tx.update(actor_grads, actor_opt, actor_params)
        actor_params = optax.apply_updates(actor_params, updates)
        updates, critic_opt = critic_tx.update(critic_grads, critic_opt, critic_params)
        critic_params = optax.apply_updates(critic_params, updates)
        return actor_params, critic_params, actor_opt, critic_opt, metrics

    return update


def ppo_epochs(update):
    """update_all(actor_params, critic_params, actor_opt, critic_opt, batch, order) -> (the four; metrics [S]).

    Runs `update` over S = epochs x minibatches minibatches in one program (a `lax.scan`): batch is the
    :class:`Rollout` of [B, ...] arrays, order [S, M] the rows of each minibatch. One dispatch per PPO iteration instead
    of a gather, a transfer and an update call per minibatch (on the lab's small models that overhead was a
    third of the update time).
    """

    def update_all(actor_params, critic_params, actor_opt, critic_opt, batch, order):
        def body(state, rows):
            minibatch = jax.tree.map(lambda x: constrain_batch(x[rows]), batch)
            *state, metrics = update(*state, minibatch)
            return tuple(state), metrics

        state, metrics = jax.lax.scan(body, (actor_params, critic_params, actor_opt, critic_opt), order)
        return *state, metrics

    return update_all


# The config sections the jitted pieces read: two trainers that agree on these (and on the models' structure, the
# score function, the token ids and the mesh) run the very same programs.
PROGRAM_SECTIONS = ("reward", "rollout", "ppo", "kl", "energy", "length_penalty", "ibl")


class PPOPrograms:
    """The jitted pieces of a PPO iteration (scoring pass, shaped reward and advantages, clipped updates, the reward
    model's features and member scores) and the optimizers, built from what is static in a run: the config sections
    of ``PROGRAM_SECTIONS``, the models' graph definitions, the score function, the EOS and pad ids and the mesh.

    Nothing here holds parameters or state. Trainers with equal static settings share one instance
    (:func:`shared_programs`), so a second run in the same process (another seed of a study, a resumed fit) traces
    and lowers nothing again: on the laboratory's models that retracing was a fifth of a run.
    """

    def __init__(
        self, config: PPOConfig, actor_graph, ref_graph, critic_graph, score_fn: ScoreFn, eos_id, pad_id, hidden_size
    ):
        self.config = config
        self.actor_graph, self.ref_graph, self.critic_graph = actor_graph, ref_graph, critic_graph
        self.score_fn, self.eos_id, self.pad_id, self.hidden_size = score_fn, eos_id, pad_id, hidden_size
        self.actor_tx, self.critic_tx = ppo_optimizers(config)
        self.score = jax.jit(self._score_impl)
        update = make_ppo_update(config, actor_graph, critic_graph, self.actor_tx, self.critic_tx)
        self.update = jax.jit(ppo_epochs(update), donate_argnums=(0, 1, 2, 3))
        self.advantages = jax.jit(self._advantages_impl)
        self.reward_features = jax.jit(self._reward_features_impl)
        self.member_scores = jax.jit(self._member_scores_impl)

    def prompt_width(self, sequences) -> int:
        """P of sequences [B, P + N]: the prompts' padded length in this batch (N: rollout.max_new_tokens)."""
        return sequences.shape[1] - self.config.rollout.max_new_tokens

    def energy_mask(self, sequences, sequence_mask):
        """[B, P + N] mask of the response tokens whose energy counts: pads and EOS excluded."""
        return response_token_mask(sequences, sequence_mask, self.prompt_width(sequences), self.eos_id).astype(
            jnp.int32
        )

    def proxy_score(self, reward_params, sequences, sequence_mask, norm=None, members=False):
        """The proxy reward of sequences [B, P + N]: (score [B], features [B, F] or None), or with ``members`` the
        raw scores [K, B] of each reward member (K = 1 unless an ensemble's score function is member-wise).

        reward.missing_eos=append_eos scores the truncated responses with EOS appended (a buffer one longer, for
        scoring only); ``norm`` = (mean [K], std [K]) normalizes each member (before an ensemble's aggregation when
        the score function is member-wise, else its output)."""
        p_len = self.prompt_width(sequences)
        response, response_mask = sequences[:, p_len:], sequence_mask[:, p_len:]
        if self.config.reward.missing_eos == "append_eos":
            response, response_mask = append_eos(response, response_mask, self.eos_id, self.pad_id)
        batch = (reward_params, sequences[:, :p_len], sequence_mask[:, :p_len], response, response_mask)
        if getattr(self.score_fn, "member_wise", False):
            if norm is None and not members:  # the call every score function takes (behaviour without options)
                return _split_score(self.score_fn(*batch))
            return _split_score(self.score_fn(*batch, norm=norm, members=members))
        score, features = _split_score(self.score_fn(*batch))
        if members:
            return jnp.asarray(score, jnp.float32)[None], features
        return (score if norm is None else normalize_scores(score, *norm)), features

    def _reward_features_impl(self, reward_params, prompt_ids, prompt_mask, response_ids, response_mask):
        """The reward model's features [B, F] (or None) of responses [B, N] to prompts [B, P], read as the rollouts'
        are (EOS appended to truncated responses with reward.missing_eos=append_eos): IBL's and detection's SFT
        side then matches the policy's side."""
        if self.config.reward.missing_eos == "append_eos":
            response_ids, response_mask = append_eos(response_ids, response_mask, self.eos_id, self.pad_id)
        return _split_score(self.score_fn(reward_params, prompt_ids, prompt_mask, response_ids, response_mask))[1]

    def _member_scores_impl(self, reward_params, sequences, sequence_mask):
        """Raw scores [K, B] of each reward member on sequences [B, P + N] (the normalization's statistics)."""
        return self.proxy_score(reward_params, sequences, sequence_mask, members=True)[0].astype(jnp.float32)

    def _score_impl(
        self, actor_params, ref_params, critic_params, reward_params, sequences, sequence_mask, reward_norm=None
    ):
        e = self.config.energy
        p_len = self.prompt_width(sequences)
        energy_mask = self.energy_mask(sequences, sequence_mask)
        width = self.hidden_size
        actor, ref = nnx.merge(self.actor_graph, actor_params), nnx.merge(self.ref_graph, ref_params)
        actor_out, actor_logits = response_logits(actor, sequences, sequence_mask, p_len)
        ref_out, ref_logits = response_logits(ref, sequences, sequence_mask, p_len)
        values = nnx.merge(self.critic_graph, critic_params)(sequences, sequence_mask)[:, p_len - 1 : -1]
        score, features = self.proxy_score(reward_params, sequences, sequence_mask, norm=reward_norm)
        # The teacher-forced dE_SFT comes from the reference forward already run for the KL's log-probs; read only
        # when EPPO is on, so that eta 0 compiles the very program plain PPO does.
        teacher_forced = e.eta != 0 and e.reference == "teacher_forced"
        return Scored(
            logprobs=_response_logprobs(actor_logits, sequences, p_len),
            ref_logprobs=_response_logprobs(ref_logits, sequences, p_len),
            values=values,
            score=score.astype(jnp.float32),
            energy=energy_from_output(actor_out, energy_mask, site=e.site, normalize=e.normalize),
            policy_layer_energy=layer_energy(actor_out.residual_l1, width, energy_mask, e.normalize),
            ref_layer_energy=layer_energy(ref_out.residual_l1, width, energy_mask, e.normalize),
            features=features,
            truncated=truncated_rows(sequences[:, p_len:], sequence_mask[:, p_len:], self.eos_id),
            ref_energy=energy_from_output(ref_out, energy_mask, site=e.site, normalize=e.normalize)
            if teacher_forced
            else None,
        )

    def _advantages_impl(self, scored: Scored, mask, sft_energy, ibl_reference, kl_coef, score_std):
        """The shaped reward (:func:`inform_jax.losses.shape_rewards`), GAE and whitening, and the next KL coefficient
        and score std; one jit. Returns (shaped, advantages, returns, kl_coef, score_std)."""
        c = self.config
        if c.length_penalty.enabled:  # the running std, updated before this rollout's rewards use it
            score_std = 0.9 * score_std + 0.1 * jnp.std(scored.score)
        shaped = shape_rewards(
            scored.score, scored.logprobs, scored.ref_logprobs, mask, kl_coef=kl_coef, kl_estimator=c.kl.estimator,
            truncated=scored.truncated if c.reward.missing_eos == "penalty" else None,
            missing_eos_penalty=c.reward.missing_eos_penalty, clip=c.reward.clip,
            length_sigma=score_std if c.length_penalty.enabled else None,
            max_length=c.rollout.max_new_tokens, eta=c.energy.eta, sft_energy=sft_energy if c.energy.eta != 0 else None,
            policy_energy=scored.energy, ibl_coef=c.ibl.coef, features=scored.features,
            ibl_reference=ibl_reference if c.ibl.coef > 0 else None,
        )  # fmt: skip
        advantages, returns = ppo_advantages(
            shaped.token_rewards, scored.values, mask, c.ppo.gamma, c.ppo.lam, c.ppo.whiten_advantages
        )
        # The adaptive controller reads the configured estimator's KL, the one logged as "kl"; the new coefficient
        # applies from the next iteration.
        if c.kl.adaptive:
            kl_coef = adaptive_kl_coef(
                kl_coef, jnp.mean(shaped.sequence_kl), c.kl.target, c.kl.horizon, c.rollout.batch_size
            )
        return shaped, advantages, returns, kl_coef, score_std


_SHARED_PROGRAMS: collections.OrderedDict[tuple, PPOPrograms] = collections.OrderedDict()
_SHARED_PROGRAMS_KEPT = 8  # a study alternates a handful of methods; older program sets are dropped


def shared_programs(
    config: PPOConfig, actor_graph, ref_graph, critic_graph, score_fn, eos_id, pad_id, hidden_size, mesh
) -> PPOPrograms:
    """The :class:`PPOPrograms` of these static settings: the one already built in this process when the settings
    are equal (config sections ``PROGRAM_SECTIONS`` by value, graph definitions by structure, the score function
    by identity: :func:`reward_model_score_fn` returns one function per reward-model graph), else a new one.
    ``mesh``: the trainer's (its programs constrain shardings to it)."""
    sections = {name: dataclasses.asdict(getattr(config, name)) for name in PROGRAM_SECTIONS}
    del sections["kl"]["coef"]  # only the state's initial value: PPO and PPO w/ KL run the same programs
    sections = json.dumps(sections, sort_keys=True, default=str)
    key = (sections, actor_graph, ref_graph, critic_graph, score_fn, eos_id, pad_id, hidden_size, mesh)
    if key in _SHARED_PROGRAMS:
        _SHARED_PROGRAMS.move_to_end(key)
        return _SHARED_PROGRAMS[key]
    programs = PPOPrograms(config, actor_graph, ref_graph, critic_graph, score_fn, eos_id, pad_id, hidden_size)
    _SHARED_PROGRAMS[key] = programs
    while len(_SHARED_PROGRAMS) > _SHARED_PROGRAMS_KEPT:
        _SHARED_PROGRAMS.popitem(last=False)
    return programs


class PPOTrainer:
    def __init__(
        self,
        config: PPOConfig,
        prompts: dict[str, np.ndarray],
        policy: CausalLM,
        *,
        score_fn: ScoreFn,
        reward_params=None,
        critic: ValueModel | None = None,
        gold_fn: Callable | None = None,
        hacked_fn: Callable | None = None,
        eos_id: int | None = None,
        pad_id: int = 0,
        mesh=None,
        callbacks: list[Callback] = (),
        reference_digest: str | None = None,
    ):
        """prompts: left-padded `input_ids`, `attention_mask` [num_prompts, P]; policy: the SFT model (actor
        init and frozen reference); score_fn/reward_params: the proxy reward, returning [B] rewards or (rewards,
        features [B, F]) (features are needed by IBL and detection); gold_fn ([B] float) and hacked_fn ([B] bool,
        e.g. the synthetic world's judge): logged, not optimized; reference_digest: a digest of the SFT model's
        files (``checkpoint_digest``) keying the SFT caches; None hashes the parameters themselves."""
        if config.reward.missing_eos != "score" and eos_id is None:
            raise ValueError(f"reward.missing_eos={config.reward.missing_eos} needs an EOS id (eos_id)")
        self.config = config
        self.prompts = {k: np.asarray(prompts[k]) for k in ("input_ids", "attention_mask")}
        self.num_prompts, self.prompt_len = self.prompts["input_ids"].shape
        d = config.data
        self.prompt_buckets = None
        if d.pad_to == "bucket":
            mask = self.prompts["attention_mask"]
            if padding_side(mask) != "left" and not np.all(mask):  # rows with no padding read as "right"
                raise ValueError("data.pad_to=bucket needs left-padded prompts (tokenize_prompts pads on the left): "
                                 "these are not; use data.pad_to=max_length")  # fmt: skip
            self.prompt_buckets = bucket_lengths(self.prompt_len, multiple=d.bucket_multiple, smallest=8)
        self.mesh = mesh or make_mesh(**dataclasses.asdict(config.mesh))
        self.eos_id, self.pad_id = eos_id, pad_id
        self.callbacks = list(callbacks)
        self.gold_fn = gold_fn
        self.hacked_fn = hacked_fn
        self.score_fn = score_fn
        reference = shard_module(nnx.clone(policy), self.mesh, copy=True)
        actor = shard_module(nnx.clone(policy), self.mesh, copy=True)
        if critic is None:
            backbone = nnx.clone(policy)
            backbone.lm_head = None
            critic = ValueModel(backbone, rngs=nnx.Rngs(config.train.seed))
        critic = shard_module(critic, self.mesh, copy=True)
        self.actor_graph, actor_params = nnx.split(actor)
        self.ref_graph, self.ref_params = nnx.split(reference)
        self.critic_graph, critic_params = nnx.split(critic)
        self.reward_params = reward_params
        self.programs = shared_programs(
            config, self.actor_graph, self.ref_graph, self.critic_graph, score_fn, eos_id, pad_id,
            policy.config.hidden_size, self.mesh,
        )  # fmt: skip
        self.actor_tx, self.critic_tx = self.programs.actor_tx, self.programs.critic_tx
        # Optimizer states are initialized on the mesh with the shardings the update returns (moments like their
        # parameters, step counts replicated): an optimizer state the jitted update sees with other shardings on its
        # second call than on its first would compile the update twice.
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.state = PPOState(
            actor=actor_params,
            critic=critic_params,
            actor_opt=self._init_optimizer(self.actor_tx, actor_params),
            critic_opt=self._init_optimizer(self.critic_tx, critic_params),
            kl_coef=jax.device_put(jnp.float32(config.kl.coef), replicated),
            score_std=jax.device_put(jnp.float32(1.0), replicated),
        )
        self.iteration = 0
        self.sft_energy: np.ndarray | None = None
        # reward.normalize=sft: (mean [K], std [K]) of each reward member over SFT samples, set by fit(); None: off.
        self.reward_norm: tuple[jax.Array, jax.Array] | None = None
        self.ibl_reference: GaussianReference | None = None
        self.reference = SFTReference(self, digest=reference_digest)
        self.detector = None if config.detect.every == 0 else TrainingDetector(self)
        p = self.programs
        self._score, self._update, self._advantages = p.score, p.update, p.advantages
        self.reward_features, self.member_scores = p.reward_features, p.member_scores
        self._score_impl, self._advantages_impl = p._score_impl, p._advantages_impl
        self.prompt_width, self.energy_mask, self.proxy_score = p.prompt_width, p.energy_mask, p.proxy_score
        t = config.train
        self.checkpoints = CheckpointStore(os.path.join(t.output_dir, "checkpoints"), keep=t.keep_checkpoints)

    def programs_for(self, config: PPOConfig) -> PPOPrograms:
        """The programs of this trainer's models under another ``config`` (e.g. EPPO's shaped reward beside PPO's)."""
        return shared_programs(
            config, self.actor_graph, self.ref_graph, self.critic_graph, self.score_fn, self.eos_id, self.pad_id,
            self.programs.hidden_size, self.mesh,
        )  # fmt: skip

    def _init_optimizer(self, tx: optax.GradientTransformation, params):
        shardings = optimizer_shardings(tx, params, jax.tree.map(lambda x: x.sharding, params), self.mesh)
        return jax.jit(tx.init, out_shardings=shardings)(params)

    # ------------------------------------------------------------------------------------ helpers

    def prompt_batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The prompts idx [B] (left-padded), cut to the bucket length of the longest (``data.pad_to``)."""
        batch = take(self.prompts, idx)
        length = padded_length(batch["attention_mask"], self.prompt_buckets)
        return {k: cut(v, length, "left") for k, v in batch.items()}

    def generate_responses(self, graphdef, params, prompt_ids, prompt_mask, key, *, greedy=None):
        """Responses of the model ``graphdef``/``params`` to left-padded prompts [B, P], with the rollout settings
        (``greedy`` overrides rollout.greedy): the sampler's output (tokens, mask [B, N]; sequences [B, P + N])."""
        r = self.config.rollout
        model = nnx.merge(graphdef, params)
        with jax.set_mesh(self.mesh):
            return generate(
                model, prompt_ids, prompt_mask, max_new_tokens=r.max_new_tokens, key=key,
                greedy=r.greedy if greedy is None else greedy, temperature=r.temperature, top_k=r.top_k,
                top_p=r.top_p, eos_id=self.eos_id, pad_id=self.pad_id,
            )  # fmt: skip

    # ------------------------------------------------------------------------------------ one iteration

    def iteration_step(self, iteration: int) -> tuple[dict, dict]:
        """One rollout + update. Returns (metrics, rollout arrays) for logs and callbacks."""
        c = self.config
        timings = {}
        start = time.perf_counter()
        idx = batch_indices(self.num_prompts, c.rollout.batch_size, iteration, c.train.seed)
        prompts = shard_rows(self.prompt_batch(idx), self.mesh)
        key = jax.random.fold_in(jax.random.key(c.train.seed), iteration)
        state = self.state
        gen = self.generate_responses(
            self.actor_graph, state.actor, prompts["input_ids"], prompts["attention_mask"], key
        )
        jax.block_until_ready(gen.tokens)
        timings["rollout_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with jax.set_mesh(self.mesh):
            scored = self._score(
                state.actor, self.ref_params, state.critic, self.reward_params, gen.sequences, gen.sequence_mask,
                self.reward_norm,
            )  # fmt: skip
        mask = gen.mask
        sft_energy = jnp.zeros_like(scored.score)
        if c.energy.eta != 0:
            if c.energy.reference == "teacher_forced":
                sft_energy = scored.ref_energy
            elif c.energy.sft_energy == "cached":
                sft_energy = jnp.asarray(self.sft_energy[idx])
            else:
                sft_energy = self.reference.energy(prompts["input_ids"], prompts["attention_mask"], key)
        shaped, advantages, returns, kl_coef, score_std = self._advantages(
            scored, mask, sft_energy, self.ibl_reference, state.kl_coef, state.score_std
        )
        lengths = jnp.sum(mask, axis=1)
        jax.block_until_ready(advantages)
        timings["scoring_s"] = time.perf_counter() - start
        start = time.perf_counter()
        batch = Rollout(gen.sequences, gen.sequence_mask, mask, scored.logprobs, scored.values, advantages, returns)
        # Each epoch visits the rollouts in a fresh order, cut into minibatches: [epochs * minibatches, size].
        size = c.rollout.batch_size // c.ppo.minibatches
        order = np.concatenate([
            np.random.default_rng([c.train.seed, iteration, epoch]).permutation(c.rollout.batch_size)
            for epoch in range(c.ppo.epochs)
        ]).reshape(-1, size)  # fmt: skip
        with jax.set_mesh(self.mesh):
            *trained, update_metrics = self._update(
                state.actor, state.critic, state.actor_opt, state.critic_opt, batch, jnp.asarray(order)
            )
        self.state = PPOState(*trained, kl_coef=kl_coef, score_std=score_std)
        jax.block_until_ready(self.state.actor)
        timings["update_s"] = time.perf_counter() - start
        metrics = {
            "proxy_reward": jnp.mean(scored.score),
            "kl": jnp.mean(shaped.sequence_kl),  # the configured estimator, summed over each response
            "kl_coef": kl_coef,
            "response_length": jnp.mean(lengths),
            "final_layer_energy": jnp.mean(scored.energy),
            "energy_penalty": jnp.mean(shaped.energy_penalty),
            "truncated_fraction": jnp.mean(scored.truncated.astype(jnp.float32)),
            "missing_eos_penalty": jnp.mean(shaped.eos_penalty),
            "ibl_penalty": jnp.mean(shaped.ibl_penalty),
            "shaped_reward": jnp.mean(shaped.score),
            "value_mean": masked_mean(scored.values, mask),
            **{k: jnp.mean(v) for k, v in update_metrics.items()},
            **timings,
        }
        for layer, (pol, ref) in enumerate(
            zip(jnp.mean(scored.policy_layer_energy, 0), jnp.mean(scored.ref_layer_energy, 0), strict=True)
        ):
            metrics[f"energy_policy_layer{layer}"] = pol
            metrics[f"energy_reference_layer{layer}"] = ref
        if self.reward_norm is not None:  # constant over the run: logged so a report can read the scale it used
            mean, std = self.reward_norm
            metrics["reward_norm_mean"], metrics["reward_norm_std"] = jnp.mean(mean), jnp.mean(std)
            if mean.shape[0] > 1:
                for k in range(mean.shape[0]):
                    metrics[f"reward_norm_mean_member{k}"], metrics[f"reward_norm_std_member{k}"] = mean[k], std[k]
        if self.gold_fn is not None:
            gold = self.gold_fn(prompts["input_ids"], prompts["attention_mask"], gen.tokens, gen.mask)
            metrics["gold_reward"] = jnp.mean(gold)
        if self.hacked_fn is not None:
            hacked = self.hacked_fn(prompts["input_ids"], prompts["attention_mask"], gen.tokens, gen.mask)
            metrics["hacked_fraction"] = jnp.mean(hacked.astype(jnp.float32))
        rollout = {"prompt_index": idx, "tokens": gen.tokens, "mask": gen.mask, "score": scored.score,
                   "energy": scored.energy}  # fmt: skip
        return {k: float(v) for k, v in jax.device_get(metrics).items()}, rollout

    # ------------------------------------------------------------------------------------ the loop

    def _restore(self) -> None:
        found = self.checkpoints.restore_latest_good(self.state._asdict())  # past a corrupt or unfinished latest one
        if found is None:
            return
        latest, restored = found
        if not self.config.kl.adaptive:  # a fixed coefficient is the config's (a resume may change it)
            restored["kl_coef"] = self.state.kl_coef
        self.state = PPOState(**restored)
        self.iteration = latest

    def _save(self, iteration: int) -> None:
        ensure_finite(self.state, iteration, "iteration", self.checkpoints.latest_step)
        self.checkpoints.save(iteration, self.state._asdict())

    # The state's parts by name (read-only views of ``self.state``).
    actor_params = property(lambda self: self.state.actor)
    critic_params = property(lambda self: self.state.critic)
    kl_coef = property(lambda self: float(self.state.kl_coef))

    def policy(self) -> CausalLM:
        return nnx.merge(self.actor_graph, self.state.actor)

    def fit(self, *, stop_after: int | None = None) -> CausalLM:
        """Run to `train.iterations` (resuming from the latest checkpoint); returns the trained policy."""
        t = self.config.train
        self._restore()
        write_run_config(
            t.output_dir, self.config.to_dict(), resumed_at=self.iteration, allow_change=t.allow_config_change
        )
        e = self.config.energy
        if e.eta != 0 and e.reference == "sampled" and e.sft_energy == "cached":
            self.sft_energy = self.reference.cached_energy()
        if self.config.reward.normalize == "sft":
            mean, std = self.reference.reward_normalization()
            self.reward_norm = (jnp.asarray(mean), jnp.asarray(std))
        if self.config.ibl.coef > 0:
            b = self.config.ibl
            count = self.num_prompts if b.max_prompts <= 0 else min(b.max_prompts, self.num_prompts)
            self.ibl_reference = fit_gaussian_reference(
                jnp.asarray(self.reference.features(count)), covariance=b.covariance, ridge=b.ridge
            )
            if not bool(jnp.all(jnp.isfinite(self.ibl_reference.precision))):
                raise ValueError(
                    f"IBL: the {b.covariance} covariance of {count} SFT latents is singular; use "
                    "ibl.covariance=ledoit_wolf, a larger ibl.ridge, or more prompts than latent dimensions"
                )
        log = MetricsLog(os.path.join(t.output_dir, "metrics.jsonl"), resume_from=self.iteration,
                         counter="iteration", report_to=t.report_to, config=self.config.to_dict())  # fmt: skip
        settings = LoopSettings(
            total=t.iterations, log_every=t.log_every, save_every=t.save_every, progress=t.progress,
            label="ppo" if self.config.energy.eta == 0 else "eppo", counter="iteration", watch=("policy_loss",),
            sync_every_step=True,
        )  # fmt: skip
        rollouts = {}

        def step(i: int) -> dict:
            metrics, rollouts["last"] = self.iteration_step(i)
            self.iteration = i + 1
            return metrics

        def detect(done: int, metrics: dict) -> dict:
            if self.detector is not None and done % self.config.detect.every == 0:
                metrics = {**metrics, **self.detector(done)}
            return metrics

        def run_callbacks(done: int, metrics: dict) -> None:
            for every, callback in self.callbacks:
                if done % every == 0:
                    callback(self, done, rollouts["last"], metrics)

        fit_loop(
            settings, self.iteration, step, log=log, save=self._save, checkpoints=self.checkpoints, before_log=detect,
            after_log=run_callbacks, stop_after=stop_after,
            postfix=lambda m: {"reward": f"{m['proxy_reward']:.3f}", "kl": f"{m['kl']:.2f}"},
        )  # fmt: skip
        return self.policy()
