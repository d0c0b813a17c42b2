"""The laboratory's stages, each cached on disk under a key of the settings it depends on: the synthetic world's
files, the SFT policy, the proxy reward models, PPO runs against them, and the final policies' greedy outputs."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.lab.config import METHODS, RM_FIELDS, SFT_FIELDS, WORLD_FIELDS, LabConfig
from inform_jax.models import CausalLM, DecoderConfig, from_pretrained, make_mesh, save_pretrained
from inform_jax.models.reward_model import (
    EnsembleRewardModel,
    HeadConfig,
    RewardModel,
    load_reward_model,
    save_reward_model,
)
from inform_jax.world.world import SyntheticWorld

# ensemble kinds -> the RM trainer's method: members trained in one vmapped program, one data order each
ENSEMBLE_METHODS = {"ensemble": "warm", "inform-ensemble": "inform+warm"}
# kinds trained as another kind with settings overridden, cached under their own name and the overridden key:
# InfoRM at beta 0 has InfoRM's head and latent size without the bottleneck (the nuisance arm's positive control);
# "inform-beta0-mean" the same with the latent's noise off in training too (a deterministic latent)
VARIANTS = {
    "inform-beta0": ("inform", {"inform_beta": 0.0}),
    "inform-beta0-mean": ("inform-mean", {"inform_beta": 0.0}),
}
# planted kinds (PROTOCOL.md section 4): "standard-seed2" is the standard RM with another training seed;
# "planted-good" the standard RM trained on the same world's pairs without label noise and without any spurious
# correlation (a clean world written beside the lab's)
RM_SEEDS = {"standard-seed2": 1000}
PLANTED_KINDS = {"standard-seed2": "standard", "planted-good": "standard"}


class Lab:
    """Holds the world, the tokenizer and the single-device mesh the stages share."""

    def __init__(self, config: LabConfig, cache_dir: str, log: Callable[[str], None] = print):
        self.config = config
        self.cache_dir = cache_dir
        # EPPO's sampled dE_SFT per prompt, shared by every run of this cache (keyed by SFT model, prompts, seed)
        self.reference_cache = os.path.join(cache_dir, "eppo-reference")
        # the reward normalization's mean / std, shared by every run of a seed against one reward model (keyed by
        # the reward model's parameters, the SFT model, prompts, sampling and seed)
        self.normalize_cache = os.path.join(cache_dir, "reward-norm")
        self.log = log
        self.world = SyntheticWorld(config.world_config())
        # Jitted: the trainer scores every rollout batch, once for the gold reward and once for the hacked label
        # (two cheap compiled calls; the eager scorer cost 2.5 s of a 12.7 s lab run).
        self.scorer = self.world.score_ids
        self.mesh = make_mesh(devices=jax.devices()[:1])
        self.files = self._world_files()
        from inform_jax.data.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(self.files["tokenizer"])
        self.prompts = self._prompts("prompts_train.jsonl", self.config.n_prompts)
        self.eval_prompts = self._prompts("prompts_test.jsonl", self.config.n_eval_prompts)

    # ------------------------------------------------------------------------------------------ data

    def _world_files(self, clean: bool = False) -> dict[str, str]:
        """The world's files; ``clean``: the same world's pairs without label noise or spurious correlation (and
        without planted markers), for the planted good reward model."""
        c = self.config
        folder = os.path.join(self.cache_dir, f"world-{'clean-' if clean else ''}{c.digest(*WORLD_FIELDS)}")
        index = os.path.join(folder, "files.json")
        if os.path.exists(index):
            with open(index) as f:
                return json.load(f)
        noise = 0.0 if clean else c.label_noise
        self.log(f"writing the synthetic world ({c.n_pairs} pairs at {noise:.0%} label noise{', clean' * clean})")
        start = time.perf_counter()
        world = self.world
        if clean and c.arm != "repetition":  # the marker arms' pairs without markers, on the same vocabulary
            world = SyntheticWorld(dataclasses.replace(c.world_config(), arm="none"))
        # outside the repetition arm nothing is planted beyond the arm's markers (None: no spurious correlation)
        correlation = (0.5 if clean else c.spurious_correlation) if c.arm == "repetition" else None
        files = world.write(
            folder, n_train=c.n_pairs, n_test=200, n_sft=c.n_sft, n_prompts_train=c.n_prompts,
            n_prompts_test=c.n_eval_prompts, label_noise=noise, spurious_correlation=correlation, seed=c.seed,
        )  # fmt: skip
        with open(index, "w") as f:
            json.dump(files, f)
        self.log(f"  wrote the world in {time.perf_counter() - start:.1f} s")
        return files

    def _prompts(self, name: str, n: int) -> dict[str, np.ndarray]:
        from inform_jax.data.preference import load_prompts
        from inform_jax.data.tokenize import tokenize_prompts

        texts, _ = load_prompts(self.files[name])
        arrays, _ = tokenize_prompts(texts[:n], self.tokenizer, self.config.prompt_length)
        return arrays

    def gold(self, prompt_ids, prompt_mask, response_ids, response_mask) -> jax.Array:
        return self.scorer(prompt_ids, prompt_mask, response_ids, response_mask).gold

    def hacked(self, prompt_ids, prompt_mask, response_ids, response_mask) -> jax.Array:
        return self.scorer(prompt_ids, prompt_mask, response_ids, response_mask).hacked

    # ------------------------------------------------------------------------------------------ models

    def decoder_config(self) -> DecoderConfig:
        c, tok = self.config, self.tokenizer
        return DecoderConfig(
            vocab_size=len(tok), hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
            num_layers=c.num_layers, num_heads=c.num_heads, num_kv_heads=c.num_heads, scan_layers=True,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        )  # fmt: skip

    def sft_policy(self) -> CausalLM:
        """The SFT policy: next-token training on the world's demonstrations (cached)."""
        c = self.config
        folder = os.path.join(self.cache_dir, f"sft-{c.digest(*SFT_FIELDS)}")
        if os.path.exists(os.path.join(folder, "config.json")):
            return from_pretrained(folder, dtype=jnp.float32, scan_layers=True)
        from inform_jax.data.tokenize import tokenize_sft
        from inform_jax.train.sft import train_sft

        with open(self.files["sft.jsonl"]) as f:
            demos = [(row["prompt"], row["response"]) for row in map(json.loads, f)]
        arrays, _ = tokenize_sft(demos, self.tokenizer, c.max_length)
        model = CausalLM(self.decoder_config(), rngs=nnx.Rngs(c.seed))
        self.log(f"training the SFT policy ({c.sft_steps} steps)")
        start = time.perf_counter()
        losses = train_sft(model, arrays, steps=c.sft_steps, batch_size=32, lr=c.sft_lr, seed=c.seed)
        self.log(f"  SFT loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f} "
                 f"({time.perf_counter() - start:.1f} s)")  # fmt: skip
        save_pretrained(model, folder)
        return model

    def reward_model(self, kind: str, sft: CausalLM) -> RewardModel | EnsembleRewardModel:
        """A proxy reward model trained on the noisy preference pairs from the SFT backbone: "standard",
        "inform" (IB head, beta ``inform_beta``), "odin" (quality and length heads), "ensemble" (members trained
        with different seeds, mean), "ensemble-wco" / "ensemble-uwo" (the same members, min / mean - uwo_coef *
        variance) or "warm" (the same members' weights averaged); "inform-ensemble" / "inform-warm" the same with
        InfoRM's IB head on every member; "inform-beta0" InfoRM with ``inform_beta`` 0 (same head and latent size),
        "inform-beta0-mean" the same decoding the latent's mean in training (no noise);
        "dir" the standard RM with reward decomposition's prioritized training (the library's ``decomposition``
        defaults: after 50 plain steps, every 50 steps, the half of the pairs with the smallest prompt-free gap);
        the planted ones: "planted-good" the standard RM on the same world's pairs without label noise or spurious
        correlation, "standard-seed2" the standard RM with another training seed."""
        c = self.config
        if kind in VARIANTS:
            c = dataclasses.replace(c, **VARIANTS[kind][1])
        # planted-good and standard-seed2 (PLANTED_KINDS) train as the standard RM, see _train_rm
        if kind in ("warm", "inform-warm"):  # WARM: the ensemble's members (one data order each) weight-averaged
            return self.reward_model("ensemble" if kind == "warm" else "inform-ensemble", sft).weight_average()
        if kind in ("ensemble-wco", "ensemble-uwo"):  # the same members, aggregated by min or mean - coef * var
            ensemble = self.reward_model("ensemble", sft)
            ensemble.aggregation = {"ensemble-wco": "min", "ensemble-uwo": "uwo"}[kind]
            ensemble.uncertainty_coef = c.uwo_coef
            return ensemble
        folder = self.rm_folder(kind)
        final = os.path.join(folder, "model")  # written last: its presence means the stage finished
        if os.path.exists(os.path.join(final, "reward_config.json")) or os.path.exists(
            os.path.join(final, "ensemble.json")
        ):
            return load_reward_model(final, dtype=jnp.float32, scan_layers=True)
        model = self._train_rm(kind, sft, os.path.join(folder, "train"), c.seed + 1 + RM_SEEDS.get(kind, 0), c)
        save_reward_model(model, final)
        return model

    def rm_folder(self, kind: str) -> str:
        """The cache folder of a trained reward model ``kind``: its ``model`` and its ``train`` run (eval.json,
        metrics, and for "dir" the priority's record of every refresh under ``train/decomposition``)."""
        c = dataclasses.replace(self.config, **VARIANTS[kind][1]) if kind in VARIANTS else self.config
        return os.path.join(self.cache_dir, f"rm-{kind}-{c.digest(*RM_FIELDS)}")

    def _train_rm(self, kind: str, sft: CausalLM, folder: str, seed: int, c: LabConfig) -> RewardModel:
        from inform_jax.train.config import config_from_dict
        from inform_jax.train.rm.data import prepare_pairs
        from inform_jax.train.rm.trainer import RewardModelTrainer

        # The ensemble's members train in one vmapped program with one data order each (the WARM scheme); the
        # ensemble keeps them apart and averages their rewards (no weight averaging).
        method = VARIANTS[kind][0] if kind in VARIANTS else PLANTED_KINDS.get(kind, ENSEMBLE_METHODS.get(kind, kind))
        files = self._world_files(clean=True) if kind == "planted-good" else self.files
        config = config_from_dict(dict(
            method=method, head=dict(latent_dim=c.latent_dim),
            loss=dict(beta=c.inform_beta, kl_reduction=c.inform_kl_reduction, num_members=c.ensemble_members,
                      aggregation="mean"),
            data=dict(train=files["prefs_train.jsonl"], eval=self.files["prefs_test.jsonl"],
                      max_length=c.max_length),
            optim=dict(lr=c.rm_lr, warmup_ratio=0.05),
            train=dict(batch_size=c.rm_batch, max_steps=c.rm_steps, eval_every=10**9, save_every=10**9,
                       log_every=max(c.rm_steps // 4, 1), output_dir=folder, progress=False, seed=seed),
        ))  # fmt: skip
        quiet = lambda *_: None  # noqa: E731
        train = prepare_pairs(config.data.train, self.tokenizer, config.data, log=quiet)
        test = prepare_pairs(config.data.eval, self.tokenizer, config.data, log=quiet)
        head = HeadConfig(kind=config.head_kind, latent_dim=c.latent_dim)

        def member(i: int) -> RewardModel:
            backbone = nnx.clone(sft)
            backbone.lm_head = None  # the reward head reads the final-norm hidden state
            return RewardModel(backbone, head, rngs=nnx.Rngs(seed + i))

        model = (
            EnsembleRewardModel([member(i) for i in range(c.ensemble_members)], "mean")
            if kind in ENSEMBLE_METHODS else member(0)
        )  # fmt: skip
        self.log(f"training the {kind} reward model ({c.rm_steps} steps)")
        start = time.perf_counter()
        trainer = RewardModelTrainer(
            config, train, test, model=model, mesh=self.mesh, pad_id=self.tokenizer.pad_token_id
        )
        trainer.fit()
        metrics = trainer.evaluate()
        self.log(f"  held-out (noise-free) accuracy {metrics['accuracy']:.3f} ({time.perf_counter() - start:.1f} s)")
        with open(os.path.join(folder, "eval.json"), "w") as f:
            json.dump(metrics, f)
        return trainer.current_model()

    # ------------------------------------------------------------------------------------------ outputs

    def greedy(self, policy: CausalLM, prompts: dict[str, np.ndarray]):
        """Greedy responses (tokens, mask [N, new_tokens]) of ``policy`` to ``prompts``."""
        from inform_jax.models.sampler import generate

        out = generate(
            policy, jnp.asarray(prompts["input_ids"]), jnp.asarray(prompts["attention_mask"]),
            max_new_tokens=self.config.new_tokens, greedy=True, eos_id=self.tokenizer.eos_token_id,
            pad_id=self.tokenizer.pad_token_id,
        )  # fmt: skip
        return out

    def judge_scores(self, prompts, tokens, mask) -> dict[str, np.ndarray]:
        ids, pmask = jnp.asarray(prompts["input_ids"]), jnp.asarray(prompts["attention_mask"])
        scores = self.scorer(ids, pmask, tokens, mask)
        return {"gold": np.asarray(scores.gold), "hacked": np.asarray(scores.hacked)}


def method_runs(config: LabConfig, eta: float | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, reward model kind, PPO overrides) for each configured method; ``eta``: EPPO's calibrated eta
    (:func:`inform_jax.lab.calibration.calibrate_eta`; None: ``config.eta``)."""
    runs = []
    for name in config.methods:
        kind, settings = METHODS[name]
        # the fair protocol, the same for every method (the oracle's gold reward included)
        overrides = {"reward.missing_eos": config.missing_eos}
        if config.reward_normalize:
            overrides["reward.normalize"] = "sft"
            overrides["reward.normalize_samples"] = config.reward_normalize_samples
        if settings.get("kl_coef"):
            overrides["kl.coef"] = config.kl
        if settings.get("eta"):
            eta_value = config.eta if eta is None else eta
            overrides.update(eppo_overrides(config, -eta_value if settings["eta"] == "flipped" else eta_value))
        if settings.get("length_penalty"):
            overrides["length_penalty.enabled"] = True
        runs.append((name, kind, overrides))
    return runs


def eppo_overrides(config: LabConfig, eta: float) -> dict[str, Any]:
    """EPPO's PPO settings: the seed paper's two-sided penalty on the final layer, no KL term."""
    return {"energy.eta": eta, "energy.site": config.energy_site, "energy.normalize": config.energy_normalize,
            "energy.reference": config.eppo_reference, "energy.sft_samples": config.eppo_sft_samples}  # fmt: skip
