"""Real-token throughput of the reward-model train step on an HH-like mix of lengths: batches padded to
``data.max_length`` (before) against batches padded to their longest row's bucket (after, the default), and the
PyTorch loop padding each batch to its longest row (what a collator with ``padding="longest"`` does).

Sequence lengths are drawn from a log-normal with median ``--median`` (250, as Anthropic HH's pairs), cut at
``--max-length`` (2048). Each side runs the same ``--steps`` batches twice: the first pass compiles every bucket,
the second is timed. Tokens/s count real (non-pad) tokens of chosen and rejected sequences. Prints a JSON dict
and writes JSON + markdown to benchmarks/results/.

    python benchmarks/rm_length_mix.py                       # 2-layer 128-wide Llama, 8 pairs per step, 6 steps
    python benchmarks/rm_length_mix.py --layers 1 --width 64 --steps 2 --max-length 256 --median 40   # quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import save_results
from rm_train_step import PAD, VOCAB, model_sizes, torch_reward_model, trainer_config

from inform_jax.models import make_mesh
from inform_jax.train.rm.trainer import RewardModelTrainer


def length_mix_pairs(n: int, median: int, max_length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n right-padded random pairs [n, max_length] whose lengths follow a log-normal (median ``median``, sigma 0.8,
    at least 8 tokens, cut at max_length)."""
    rng = np.random.default_rng(seed)
    out = {}
    for side in ("chosen", "rejected"):
        lengths = np.clip(np.round(rng.lognormal(np.log(median), 0.8, n)), 8, max_length).astype(int)
        mask = (np.arange(max_length)[None] < lengths[:, None]).astype(np.int32)
        out[f"{side}_input_ids"] = np.where(mask > 0, rng.integers(1, VOCAB, (n, max_length)), PAD).astype(np.int32)
        out[f"{side}_attention_mask"] = mask
    out["response_lengths"] = np.stack([out[f"{s}_attention_mask"].sum(1) // 2 for s in ("chosen", "rejected")], 1)
    return out


def bench_ours(pad_to: str, sizes: dict, pairs: dict, batch: int, steps: int) -> dict:
    """Real tokens/s of `RewardModelTrainer`'s step (batches as `fit` makes them) over `steps` batches, timed on a
    second pass once every bucket is compiled."""
    with tempfile.TemporaryDirectory() as folder:
        config = trainer_config("inform", sizes, batch, "float32", folder)
        config.data.pad_to = pad_to
        trainer = RewardModelTrainer(config, pairs, mesh=make_mesh(devices=jax.devices()[:1]))

        def one_pass() -> tuple[float, int]:
            real, start = 0, time.perf_counter()
            for step in range(steps):
                batch_arrays = trainer.train_batch(step)
                real += int(batch_arrays["chosen_attention_mask"].sum() + batch_arrays["rejected_attention_mask"].sum())
                with jax.set_mesh(trainer.mesh):
                    trainer.params, trainer.opt_state, metrics = trainer._train_step(
                        trainer.params, trainer.opt_state, batch_arrays, jnp.asarray(step, jnp.int32)
                    )
                jax.block_until_ready(metrics)
            return time.perf_counter() - start, real

        one_pass()  # compiles every length used
        seconds, real = one_pass()
        trainer.checkpoints.close()
        lengths = sorted(trainer.lengths_seen)
    return {"seconds": seconds, "real_tokens": real, "real_tokens_per_s": real / seconds, "lengths": lengths}


def bench_torch(sizes: dict, pairs: dict, batch: int, steps: int) -> dict:
    """The PyTorch loop over the same batches, each padded to its longest row (float32, AdamW, clip 1.0)."""
    import torch
    import torch.nn.functional as F

    from inform_jax.train.batches import batch_indices

    torch.set_num_threads(os.cpu_count())
    peer = torch_reward_model(sizes).train()
    opt = torch.optim.AdamW(peer.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    n = len(pairs["chosen_input_ids"])

    def one_pass() -> tuple[float, int]:
        real, start = 0, time.perf_counter()
        for step in range(steps):
            idx = batch_indices(n, batch, step, 0)
            mask = np.concatenate([pairs["chosen_attention_mask"][idx], pairs["rejected_attention_mask"][idx]])
            width = int(mask.sum(1).max())
            ids = np.concatenate([pairs["chosen_input_ids"][idx], pairs["rejected_input_ids"][idx]])[:, :width]
            real += int(mask.sum())
            rewards = peer(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask[:, :width])).logits[:, 0]
            loss = -F.logsigmoid(rewards[:batch] - rewards[batch:]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            loss.item()
        return time.perf_counter() - start, real

    one_pass()
    seconds, real = one_pass()
    return {"seconds": seconds, "real_tokens": real, "real_tokens_per_s": real / seconds, "torch": torch.__version__}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--median", type=int, default=250)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    sizes = model_sizes(args.layers, args.width)
    pairs = length_mix_pairs(args.batch * args.steps, args.median, args.max_length)
    before = bench_ours("max_length", sizes, pairs, args.batch, args.steps)
    after = bench_ours("bucket", sizes, pairs, args.batch, args.steps)
    result = {
        "benchmark": "rm_length_mix", "sizes": sizes, "batch": args.batch, "steps": args.steps,
        "median_length": args.median, "max_length": args.max_length, "backend": jax.default_backend(),
        "padded_to_max_length": before, "padded_to_bucket": after,
        "speedup_bucket_vs_max_length": after["real_tokens_per_s"] / before["real_tokens_per_s"],
    }  # fmt: skip
    if not args.no_torch:
        peer = bench_torch(sizes, pairs, args.batch, args.steps)
        result["torch_padded_to_longest"] = peer
        result["ratio_bucket_vs_torch"] = after["real_tokens_per_s"] / peer["real_tokens_per_s"]
    rows = [
        ("ours, padded to max_length", before["real_tokens_per_s"]),
        ("ours, padded to buckets", after["real_tokens_per_s"]),
        *([("PyTorch, padded to longest", result["torch_padded_to_longest"]["real_tokens_per_s"])]
          if not args.no_torch else []),
    ]  # fmt: skip
    table = "| side | real tokens/s |\n|---|---|\n" + "\n".join(f"| {name} | {v:,.0f} |" for name, v in rows)
    save_results("rm_length_mix", result, table)
    return result


if __name__ == "__main__":
    main()
