"""A PPO iteration split into rollout / scoring / update time, and EPPO's overhead over PPO.

Same tiny-to-small Llama policy, a reward model of the same size (InfoRM head), the same prompts; one
process. EPPO variants: cached SFT energies (computed once per prompt before training, excluded from the
per-iteration time, reported separately) and per-batch SFT regeneration (the authors' code).

    python benchmarks/ppo_iteration.py                  # 4-layer 256-wide Llama, 32 prompts, 32 new tokens
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np
from _common import save_results
from flax import nnx

from inform_jax.models import CausalLM, DecoderConfig, make_mesh
from inform_jax.models.reward_model import HeadConfig, RewardModel
from inform_jax.train.config import load_config
from inform_jax.train.ppo.config import PPOConfig
from inform_jax.train.ppo.trainer import PPOTrainer, reward_model_score_fn


def make_trainer(
    config: DecoderConfig,
    *,
    prompts: int,
    prompt_len: int,
    new_tokens: int,
    iterations: int,
    eta: float,
    mode: str,
    folder: str,
    num_prompts: int | None = None,
    reference_digest: str | None = None,
) -> PPOTrainer:
    """A PPOTrainer on one device: policy `config` (the reference is its copy, the critic an SFT-initialised value
    model), a reward model of the same config with an InfoRM head, `num_prompts` (default 4 x `prompts`) random
    prompts of `prompt_len` tokens, `prompts` per rollout of `new_tokens` (no EOS: every response is full length);
    EPPO when `eta` > 0 with SFT energies `mode` ("cached" | "regenerate"). reference_digest: names the SFT model
    for the energy cache instead of hashing its parameters on the host (seconds for a 1B model)."""
    ppo_config = load_config(
        None,
        [f"energy.eta={eta}", f"energy.sft_energy={mode}", f"rollout.batch_size={prompts}",
         f"rollout.max_new_tokens={new_tokens}", f"train.iterations={iterations + 1}",
         f"train.output_dir={folder}", "train.progress=false", "train.save_every=100000"],
        cls=PPOConfig,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    rows = num_prompts or 4 * prompts
    prompt_arrays = {
        "input_ids": rng.integers(3, config.vocab_size, (rows, prompt_len)),
        "attention_mask": np.ones((rows, prompt_len), np.int32),
    }
    reward = RewardModel.create(config, HeadConfig(kind="ib"), rngs=nnx.Rngs(1))
    graph, params = nnx.split(reward)
    return PPOTrainer(
        ppo_config, prompt_arrays, CausalLM(config, rngs=nnx.Rngs(0)), score_fn=reward_model_score_fn(graph),
        reward_params=params, eos_id=None, mesh=make_mesh(devices=jax.devices()[:1]),
        reference_digest=reference_digest,
    )  # fmt: skip


def split_seconds(timings: list[dict]) -> dict:
    """Median rollout / scoring / update seconds over iterations (their `iteration_step` metrics) and their sum."""
    split = {k: float(np.median([t[k] for t in timings])) for k in ("rollout_s", "scoring_s", "update_s")}
    return {**split, "iteration_s": sum(split.values())}


def run(variant: str, args, folder: str) -> dict:
    config = DecoderConfig(
        vocab_size=args.vocab, hidden_size=args.width, intermediate_size=2 * args.width, num_layers=args.layers,
        num_heads=args.width // 64, num_kv_heads=args.width // 64,
    )  # fmt: skip
    eta, mode = {"ppo": (0.0, "cached"), "eppo-cached": (2.0, "cached"), "eppo-regenerate": (2.0, "regenerate")}[
        variant
    ]
    trainer = make_trainer(
        config, prompts=args.prompts, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
        iterations=args.iterations, eta=eta, mode=mode, folder=f"{folder}/{variant}",
    )  # fmt: skip
    start = time.perf_counter()
    if eta > 0 and mode == "cached":
        trainer.sft_energy = trainer.reference.cached_energy()
    cache_s = time.perf_counter() - start
    trainer.iteration_step(0)  # compile
    times = [trainer.iteration_step(i + 1)[0] for i in range(args.iterations)]
    return {**split_seconds(times), "sft_energy_cache_s": cache_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = {v: run(v, args, folder) for v in ("ppo", "eppo-cached", "eppo-regenerate")}
    base = results["ppo"]["iteration_s"]
    for v in ("eppo-cached", "eppo-regenerate"):
        results[v]["overhead_pct"] = (results[v]["iteration_s"] / base - 1) * 100
    out = {
        "model": f"llama {args.layers}x{args.width}", "prompts": args.prompts, "new_tokens": args.new_tokens,
        **results, "device": jax.devices()[0].device_kind,
    }  # fmt: skip
    lines = [
        "| variant | rollout s | scoring s | update s | iteration s | overhead vs PPO |\n|---|---|---|---|---|---|\n"
    ]
    for v, r in results.items():
        lines.append(
            f"| {v} | {r['rollout_s']:.3f} | {r['scoring_s']:.3f} | {r['update_s']:.3f} | {r['iteration_s']:.3f} "
            f"| {r.get('overhead_pct', 0.0):+.1f}% |\n"
        )
    save_results("ppo_iteration", out, "".join(lines))


if __name__ == "__main__":
    main()
