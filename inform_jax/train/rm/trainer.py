"""Reward-model trainer: one jitted train step over a device mesh, orbax checkpoints, exact resume.

    trainer = RewardModelTrainer(config, train_arrays, eval_arrays)
    model = trainer.fit()          # resumes from output_dir/checkpoints when present

    trainer = RewardModelTrainer.from_config(config)   # data.train / data.eval read and tokenized

The method (``config.method``, :mod:`inform_jax.train.rm.methods`) decides the head, the scheme, the loss and
the callbacks (reward decomposition's prompt-free priority), whichever way the trainer is built.

`train_arrays` / `eval_arrays` are tokenized pairs (see `inform_jax.train.rm.data.prepare_pairs`):
`chosen_input_ids`, `chosen_attention_mask`, `rejected_input_ids`, `rejected_attention_mask` [N, T],
`response_lengths` [N, 2] and, with ``loss.margin: column``, `margins` [N]; `train_arrays` may instead be a
ProcessPairs (``data.tokenize``: each process tokenizes only the rows its devices hold, see
`inform_jax.train.rm.pair_source`). Per-pair loss weights live in `trainer.pair_weights` [N] (ones by default);
callbacks may change them (the decomposition method reweights pairs from the current model) and they are
checkpointed with the parameters.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.data.buckets import bucket_for, bucket_lengths
from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.models import make_mesh, shard_module
from inform_jax.models.attention_backends import kernel_bucket_multiple
from inform_jax.models.reward_model import EnsembleRewardModel, HeadConfig, RewardModel, save_reward_model
from inform_jax.models.sharding import data_parallelism, local_positions, replicated, shard_rows, to_host
from inform_jax.train.backbone import build_backbone, check_tokenizer_fits, section_config
from inform_jax.train.batches import batch_indices
from inform_jax.train.checkpoints import CheckpointStore
from inform_jax.train.config import RMTrainConfig
from inform_jax.train.loop import LoopSettings, ensure_finite, fit_loop
from inform_jax.train.metrics_log import MetricsLog
from inform_jax.train.optim import adamw
from inform_jax.train.rm.data import load_pairs, prepare_pairs
from inform_jax.train.rm.objective import evaluate_pairs
from inform_jax.train.rm.pair_source import ARRAY_KEYS, SEQUENCE_KEYS, ArrayPairs, ProcessPairs
from inform_jax.train.rm.step import make_train_step, optimizer_shardings
from inform_jax.train.run_folder import write_run_config

__all__ = ["ARRAY_KEYS", "SEQUENCE_KEYS", "RewardModelTrainer", "build_reward_model", "preference_metrics"]

Callback = tuple[int, Callable[["RewardModelTrainer", int], None]]


def build_reward_model(config: RMTrainConfig) -> RewardModel | EnsembleRewardModel:
    """A fresh model for the config's method (members share one backbone init for WARM and pretrained runs)."""
    seed = config.train.seed
    head = HeadConfig(kind=config.head_kind, latent_dim=config.head.latent_dim, decoder=config.head.decoder)
    if config.scheme == "single":
        return RewardModel(build_backbone(config, seed), head, rngs=nnx.Rngs(seed + 1))
    k = config.loss.num_members
    shared = config.scheme == "warm" or config.model.path is not None
    backbone = build_backbone(config, seed) if shared else None
    members = [
        RewardModel(backbone if shared else build_backbone(config, seed + 17 * i), head, rngs=nnx.Rngs(seed + 1 + i))
        for i in range(k)
    ]
    return EnsembleRewardModel(members, config.loss.aggregation, config.loss.uncertainty_coef)


class RewardModelTrainer:
    def __init__(
        self,
        config: RMTrainConfig,
        train_arrays: dict[str, np.ndarray] | ProcessPairs,
        eval_arrays: dict[str, np.ndarray] | None = None,
        *,
        model: RewardModel | EnsembleRewardModel | None = None,
        mesh=None,
        callbacks: list[Callback] = (),
        pad_id: int = 0,
    ):
        """callbacks: extra (every, fn(trainer, step)) pairs, run after the method's own; pad_id: the tokenizer's
        pad id (methods that splice sequences, e.g. dir, pad with it)."""
        self.train_data = train_arrays if isinstance(train_arrays, ProcessPairs) else ArrayPairs(train_arrays)
        self.eval_data = None if eval_arrays is None else ArrayPairs(eval_arrays, "eval")
        method = config.method_spec
        if method.pair_transform is not None and self.train_data.transform != method.name:
            raise ValueError(
                f"method {method.name!r} transforms the pair list before tokenizing: build the train arrays with "
                f"prepare_pairs(..., transform=method_pair_transform(config)) or RewardModelTrainer.from_config"
            )
        if config.loss.margin == "column" and not self.train_data.has_margins:
            raise ValueError("loss.margin=column reads a per-pair margin: build the train arrays with "
                             "prepare_pairs(..., margins=True) or RewardModelTrainer.from_config")  # fmt: skip
        self.config = config
        self.eval_arrays = None if eval_arrays is None else self.eval_data.arrays
        self.num_pairs = self.train_data.num_pairs
        if config.data.pad_to == "bucket":
            sides = {source.padding_side for source in (self.train_data, self.eval_data) if source is not None}
            if None in sides or len(sides) > 1:
                raise ValueError("data.pad_to=bucket needs every row padded on one side (prepare_pairs pads on the "
                                 "right); these arrays mix sides or have padding inside rows: use "
                                 "data.pad_to=max_length")  # fmt: skip
        self.pair_weights = np.ones(self.num_pairs, np.float32)
        if method.callbacks is not None and not isinstance(self.train_data, ArrayPairs):
            raise ValueError(f"method {method.name!r} scores every pair: it needs the train arrays tokenized up front "
                             "(data.tokenize=upfront)")  # fmt: skip
        own = method.callbacks(config, train_arrays, pad_id) if method.callbacks is not None else []
        self.callbacks = [*own, *callbacks]
        t = config.train
        self.total_steps = t.max_steps or math.ceil(t.epochs * self.num_pairs / t.batch_size)
        self.mesh = mesh or make_mesh(**dataclasses.asdict(config.mesh))
        data_devices = data_parallelism(self.mesh)
        if (t.batch_size // t.grad_accum) % data_devices:
            raise ValueError(
                f"micro-batch {t.batch_size // t.grad_accum} pairs must split over {data_devices} data devices"
            )
        model = model if model is not None else build_reward_model(config)
        shard_module(model, self.mesh, copy=True)
        self.graphdef, params = nnx.split(model)
        self.tx, self.schedule = adamw(config.optim, self.total_steps)
        self.param_shardings = jax.tree.map(lambda x: x.sharding, params)
        self.opt_shardings = optimizer_shardings(self.tx, params, self.param_shardings, self.mesh)
        self.params = params
        self.opt_state = jax.jit(self.tx.init, out_shardings=self.opt_shardings)(params)
        self.step = 0
        self.lengths_seen: set[int] = set()
        right_padded = self.train_data.padding_side == "right"
        self._train_step = make_train_step(
            config, self.graphdef, self.tx, self.schedule, self.param_shardings, self.opt_shardings,
            right_padded=right_padded,
        )  # fmt: skip
        self._eval_step = jax.jit(lambda p, b: evaluate_pairs(nnx.merge(self.graphdef, p), b, config.loss.kl_reduction))
        self.checkpoints = CheckpointStore(os.path.join(t.output_dir, "checkpoints"), keep=t.keep_checkpoints)

    def _batch(self, source, indices: np.ndarray, weights: np.ndarray | None, member_axis: bool):
        """The global batch of rows ``indices`` of ``source`` (an ArrayPairs or ProcessPairs); this process supplies
        (and a ProcessPairs tokenizes) only the rows its devices hold."""
        length = self.padded_length(source.lengths[indices], source.max_length)
        batch = source.rows(indices, length, local_positions(self.mesh, indices.shape, member_axis=member_axis))
        if weights is not None:
            batch["weights"] = weights[indices]
        return shard_rows(batch, self.mesh, member_axis=member_axis)  # each host feeds only its devices' rows

    def padded_length(self, lengths: np.ndarray, full: int) -> int:
        """The length a batch's sequences are cut to (``data.pad_to``), from its rows' real lengths [..., 2] and the
        longest a row may be; a length not seen before is logged once, since it compiles the step again."""
        d = self.config.data
        if d.pad_to == "bucket":
            platform = self.mesh.devices.flat[0].platform
            multiple = kernel_bucket_multiple(d.bucket_multiple, platform, self.config.model.attention_impl)
            length = bucket_for(int(np.max(lengths)), bucket_lengths(full, multiple=multiple))
        else:
            length = full
        if length not in self.lengths_seen:
            self.lengths_seen.add(length)
            print(f"train-rm: batches of {length} tokens (lengths so far: {sorted(self.lengths_seen)})", flush=True)
        return length

    def train_batch(self, step: int) -> dict:
        t = self.config.train
        if self.config.scheme == "warm":  # one data order per member
            k = self.config.loss.num_members
            indices = np.stack([batch_indices(self.num_pairs, t.batch_size, step, t.seed + 1000 * i) for i in range(k)])
            return self._batch(self.train_data, indices, self.pair_weights, member_axis=True)
        indices = batch_indices(self.num_pairs, t.batch_size, step, t.seed)
        return self._batch(self.train_data, indices, self.pair_weights, member_axis=False)

    # ---------------------------------------------------------------------------------------- public

    @classmethod
    def from_config(
        cls, config: RMTrainConfig, *, tokenizer=None, log=print, train_data=None, eval_data=None, **kwargs
    ) -> RewardModelTrainer:
        """A trainer on ``data.train`` (and ``data.eval``) read, transformed as the method needs and tokenized
        with ``tokenizer`` (default: the one in ``data.tokenizer`` or ``model.path``). kwargs go to __init__.

        Paths may be Hugging Face Hub names (:mod:`inform_jax.hub`). ``train_data`` / ``eval_data``: a
        ``datasets.Dataset`` used in place of ``data.train`` / ``data.eval``; its rows go through the same format
        detection and checks as a file's, and the run config records it by its row count and fingerprint.

        ``data.tokenize``: ``upfront`` tokenizes the whole train file on every process; ``per_process`` (what
        ``auto`` picks on many processes) splits a metadata pass over the processes, then tokenizes per step only
        the rows this process's devices hold (:class:`ProcessPairs`). Methods that score every pair (dir,
        inform+dir) tokenize the whole file in either mode. The held-out file (small) is always tokenized whole."""
        config = _with_datasets(config, train_data, eval_data)
        train_source = train_data if train_data is not None else config.data.train
        eval_source = eval_data if eval_data is not None else (config.data.eval or None)
        if not config.data.train:
            raise ValueError("data.train is required (a preference file)")
        if tokenizer is None:
            path = config.data.tokenizer or config.model.path
            if not path:
                raise ValueError("data.tokenizer (or model.path) is required to tokenize the data")
            tokenizer = load_tokenizer(path)
        check_tokenizer_fits(tokenizer, section_config(config.model), "model")
        transform = method_pair_transform(config)
        margins = config.loss.margin == "column"  # the train file's per-pair margins (the held-out loss is not read)
        if _tokenize_mode(config) == "per_process":
            pairs = load_pairs(train_source, tokenizer, config.data, transform=transform, log=log, margins=margins)
            name = getattr(transform, "__name__", None)
            train = ProcessPairs(pairs, tokenizer, config.data.max_length, transform=name, log=log, margins=margins)
        else:
            train = prepare_pairs(train_source, tokenizer, config.data, transform=transform, log=log, margins=margins)
        held_out = prepare_pairs(eval_source, tokenizer, config.data, log=log) if eval_source is not None else None
        trainer = cls(config, train, held_out, pad_id=tokenizer.pad_token_id or 0, **kwargs)
        trainer.tokenizer = tokenizer
        return trainer

    def current_model(self) -> RewardModel | EnsembleRewardModel:
        return nnx.merge(self.graphdef, self.params)

    def export_model(self) -> RewardModel | EnsembleRewardModel:
        """The model to save: WARM averages its members' weights into one reward model."""
        model = self.current_model()
        return model.weight_average() if self.config.scheme == "warm" else model

    def evaluate(self, arrays: dict | None = None) -> dict[str, float]:
        """Held-out accuracy, margin, KL, and accuracy bucketed by which response is longer."""
        source = ArrayPairs(arrays, "eval") if arrays is not None else self.eval_data
        n = source.num_pairs
        size = self.config.train.eval_batch_size
        outputs = []
        for start in range(0, n, size):
            idx = np.arange(start, start + size) % n  # the last batch wraps; the extra rows are cut below
            scores = self._eval_step(self.params, self._batch(source, idx, None, member_axis=False))
            out = {k: to_host(v) for k, v in scores.items()}  # rows split over every host's devices
            outputs.append({k: v[: min(size, n - start)] for k, v in out.items()})
        scores = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
        return preference_metrics(scores, source.response_lengths)

    def _restore(self) -> None:
        found = self.checkpoints.restore_latest_good(self._state())  # past a corrupt or unfinished latest one
        if found is None:
            return
        self.step, restored = found
        self.params, self.opt_state = restored["params"], restored["opt_state"]
        self.pair_weights = to_host(restored["pair_weights"])

    def _save(self, step: int) -> None:
        state = self._state()
        ensure_finite(state, step, "step", self.checkpoints.latest_step)
        self.checkpoints.save(step, state)

    def _state(self) -> dict:
        """What a checkpoint holds; pair_weights as an array replicated over the mesh (on many hosts a
        checkpoint holds only global arrays)."""
        return {"params": self.params, "opt_state": self.opt_state,
                "pair_weights": replicated(self.pair_weights, self.mesh)}  # fmt: skip

    def fit(self, *, stop_after: int | None = None) -> RewardModel | EnsembleRewardModel:
        """Train to `total_steps` (resuming from the latest checkpoint) and export to output_dir/final.

        stop_after: return after that many steps of this call without exporting (simulates a killed run).
        """
        t = self.config.train
        self._restore()
        write_run_config(t.output_dir, self.config.to_dict(), resumed_at=self.step, allow_change=t.allow_config_change)
        log = MetricsLog(os.path.join(t.output_dir, "metrics.jsonl"), resume_from=self.step, counter="step",
                         report_to=t.report_to, config=self.config.to_dict())  # fmt: skip
        settings = LoopSettings(
            total=self.total_steps, log_every=t.log_every, save_every=t.save_every, progress=t.progress,
            label=f"train-rm {self.config.method}", counter="step", watch=("loss", "grad_norm"),
        )  # fmt: skip

        def step(i: int) -> dict:
            batch = self.train_batch(i)
            with jax.set_mesh(self.mesh):
                self.params, self.opt_state, metrics = self._train_step(
                    self.params, self.opt_state, batch, jnp.asarray(i, jnp.int32)
                )
            self.step = i + 1
            return metrics

        def callbacks_and_eval(done: int, metrics: dict) -> None:
            for every, callback in self.callbacks:
                if done % every == 0:
                    callback(self, done)
            if self.eval_arrays is not None and (done % t.eval_every == 0 or done == self.total_steps):
                log.write({"step": done, "split": "eval", **self.evaluate()})

        fit_loop(
            settings, self.step, step, log=log, record={"split": "train"}, save=self._save,
            checkpoints=self.checkpoints, after_log=callbacks_and_eval, stop_after=stop_after,
            postfix=lambda m: {"loss": f"{float(m['loss']):.4f}", "acc": f"{float(m['accuracy']):.3f}"},
        )  # fmt: skip
        data = self.train_data
        if isinstance(data, ProcessPairs):
            print(f"train-rm: tokenized {data.rows_tokenized} of the {data.rows_requested} batch rows on this process "
                  f"({data.num_pairs} pairs)", flush=True)  # fmt: skip
        if self.step < self.total_steps:  # stopped by stop_after: no export
            return self.current_model()
        model = self.export_model()
        extra = {
            "method": self.config.method,
            "beta": self.config.loss.beta,
            "kl_reduction": self.config.loss.kl_reduction,
        }
        save_reward_model(model, os.path.join(t.output_dir, "final"), extra)
        return model


def _with_datasets(config: RMTrainConfig, train_data, eval_data) -> RMTrainConfig:
    """``config`` with ``data.train`` / ``data.eval`` naming the ``datasets.Dataset`` given in their place (the run
    config records what the run was trained on; a resume on other data is then refused as for a changed file)."""
    from inform_jax.data.preference import source_name

    names = {key: source_name(data) for key, data in (("train", train_data), ("eval", eval_data)) if data is not None}
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **names)) if names else config


def method_pair_transform(config: RMTrainConfig):
    """The method's transform of the loaded pair list (e.g. RRM's augmentation), named after the method; or None."""
    method = config.method_spec
    if method.pair_transform is None:
        return None
    transform = method.pair_transform(config)
    transform.__name__ = method.name  # prepare_pairs records it; the trainer checks it
    return transform


def _tokenize_mode(config: RMTrainConfig) -> str:
    """``data.tokenize`` resolved: ``auto`` is per_process on many processes, else upfront; methods that score
    every pair (their callbacks read all the train arrays) tokenize up front."""
    mode = config.data.tokenize
    if mode == "auto":
        mode = "per_process" if jax.process_count() > 1 else "upfront"
    if mode == "per_process" and config.method_spec.callbacks is not None:
        print(f"train-rm: method {config.method} scores every pair: every process tokenizes the whole train file",
              flush=True)  # fmt: skip
        mode = "upfront"
    return mode


def preference_metrics(scores: dict[str, np.ndarray], response_lengths: np.ndarray) -> dict[str, float]:
    """Accuracy (ties count half), mean margin, mean KL, and accuracy by which response is longer."""
    margin = scores["reward_chosen"] - scores["reward_rejected"]
    correct = (margin > 0) + 0.5 * (margin == 0)
    longer = np.sign(response_lengths[:, 0] - response_lengths[:, 1])
    out = {"accuracy": float(correct.mean()), "margin": float(margin.mean()), "pairs": len(margin)}
    for name, sign in (("chosen_longer", 1), ("rejected_longer", -1), ("same_length", 0)):
        sel = longer == sign
        out[f"accuracy_{name}"] = float(correct[sel].mean()) if sel.any() else float("nan")
        out[f"pairs_{name}"] = int(sel.sum())
    if "kl_chosen" in scores:
        out["kl"] = float(0.5 * (scores["kl_chosen"].mean() + scores["kl_rejected"].mean()))
    return out
