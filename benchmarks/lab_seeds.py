"""The lab's seeds as one vmapped computation against one seed after another, per piece of a PPO iteration.

Issue 24 asks for the lab's seeds to run together as one vmapped computation, so that 10 seeds cost little more
than one. This measures whether that pays on the machine at hand before the lab is rebuilt around it: the pieces
of :class:`~inform_jax.train.ppo.trainer.PPOTrainer`'s iteration (rollout with the KV-cache sampler, the scoring
pass, the scanned clipped updates) at the lab's model shape, once per seed in a loop and once under ``jax.vmap``
over a leading seed axis of every parameter, optimizer state, prompt batch and key. The models are random (the
timing does not depend on the values); every seed gets its own parameters, as the lab's seeds do.

    python benchmarks/lab_seeds.py              # the lab's shape: 4 layers x 64 wide, 32 rollouts, 10 seeds

A ratio above 1 means the vmapped computation is that much faster per seed than the loop.
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from _common import paired_median_seconds, save_results
from flax import nnx
from ppo_iteration import make_trainer

from inform_jax.models import DecoderConfig
from inform_jax.models.sampler import generate
from inform_jax.train.ppo.trainer import Rollout, make_ppo_update, ppo_epochs


def _stack(trees):
    """One pytree with a leading seed axis [S, ...] from S pytrees of the same structure."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def pieces(trainer):
    """(rollout, score, update): the trainer's iteration pieces as pure functions of one seed's arrays."""
    r = trainer.config.rollout

    # the sampler with the trainer's rollout settings (trainer.generate_responses enters the mesh, which a jit
    # cannot do inside)
    def rollout(actor, prompt_ids, prompt_mask, key):
        model = nnx.merge(trainer.actor_graph, actor)
        out = generate(model, prompt_ids, prompt_mask, max_new_tokens=r.max_new_tokens, key=key, greedy=r.greedy,
                       temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, eos_id=trainer.eos_id,
                       pad_id=trainer.pad_id)  # fmt: skip
        return out.sequences, out.sequence_mask, out.mask

    update = ppo_epochs(
        make_ppo_update(trainer.config, trainer.actor_graph, trainer.critic_graph, trainer.actor_tx, trainer.critic_tx)
    )
    return rollout, trainer._score_impl, update


def largest_difference(per_seed: list, stacked) -> float:
    """The largest |a - b| between the loop's outputs (one pytree per seed) and the vmapped output (one pytree with a
    leading seed axis): the two compute the same thing, so this is float rounding (sampled tokens equal exactly)."""
    loop = _stack(per_seed)
    leaves = zip(jax.tree.leaves(loop), jax.tree.leaves(stacked), strict=True)
    return max(float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)))) for a, b in leaves)


def seed_inputs(trainer, seed: int, batch: int):
    """One seed's arguments of each piece: its own random parameters (perturbed copies of the trainer's), prompts,
    key, and a rollout of it for the scoring pass and the update."""
    rng = np.random.default_rng(seed)
    noise = lambda tree: jax.tree.map(lambda x: x + 0.01 * rng.standard_normal(x.shape).astype(x.dtype), tree)  # noqa: E731
    actor, critic = noise(trainer.state.actor), noise(trainer.state.critic)
    rows = rng.choice(trainer.num_prompts, batch, replace=False)
    prompts = trainer.prompt_batch(rows)
    ids, mask = jnp.asarray(prompts["input_ids"]), jnp.asarray(prompts["attention_mask"])
    return {"actor": actor, "critic": critic, "ref": noise(trainer.ref_params), "reward": noise(trainer.reward_params),
            "actor_opt": trainer.actor_tx.init(actor), "critic_opt": trainer.critic_tx.init(critic),
            "prompt_ids": ids, "prompt_mask": mask, "key": jax.random.key(seed)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=98)  # the lab's tokenizer
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = DecoderConfig(
        vocab_size=args.vocab, hidden_size=args.width, intermediate_size=2 * args.width, num_layers=args.layers,
        num_heads=4, num_kv_heads=4, scan_layers=True,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        trainer = make_trainer(config, prompts=args.prompts, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                               iterations=1, eta=0.0, mode="cached", folder=folder)  # fmt: skip
    rollout, score, update = pieces(trainer)
    seeds = [seed_inputs(trainer, s, args.prompts) for s in range(args.seeds)]
    for s in seeds:  # every seed's rollout and scoring, for the pieces downstream of them
        s["sequences"], s["sequence_mask"], s["response_mask"] = jax.jit(rollout)(
            s["actor"], s["prompt_ids"], s["prompt_mask"], s["key"]
        )
        scored = jax.jit(score)(s["actor"], s["ref"], s["critic"], s["reward"], s["sequences"], s["sequence_mask"])
        advantages = jnp.asarray(np.random.default_rng(0).standard_normal(scored.logprobs.shape), jnp.float32)
        s["batch"] = Rollout(s["sequences"], s["sequence_mask"], s["response_mask"], scored.logprobs, scored.values,
                             advantages, advantages)  # fmt: skip
        size = args.prompts // trainer.config.ppo.minibatches
        orders = [np.random.default_rng(e).permutation(args.prompts) for e in range(trainer.config.ppo.epochs)]
        s["order"] = jnp.asarray(np.concatenate(orders).reshape(-1, size))
    work = {
        "rollout": (rollout, ("actor", "prompt_ids", "prompt_mask", "key")),
        "scoring": (score, ("actor", "ref", "critic", "reward", "sequences", "sequence_mask")),
        "update": (update, ("actor", "critic", "actor_opt", "critic_opt", "batch", "order")),
    }
    results = {}
    for name, (fn, names) in work.items():
        one, together = jax.jit(fn), jax.jit(jax.vmap(fn))
        stacked = [_stack([s[n] for s in seeds]) for n in names]

        def loop(one=one, names=names):
            return jax.block_until_ready([one(*(s[n] for n in names)) for s in seeds])

        def vmapped(together=together, stacked=stacked):
            return jax.block_until_ready(together(*stacked))

        loop_s, vmap_s = paired_median_seconds(loop, vmapped, args.repeats)
        results[name] = {"loop_s": loop_s, "vmapped_s": vmap_s, "speedup": loop_s / vmap_s,
                         "max_abs_difference": largest_difference(loop(), vmapped())}  # fmt: skip
    loop_total = sum(r["loop_s"] for r in results.values())
    vmap_total = sum(r["vmapped_s"] for r in results.values())
    results["iteration"] = {"loop_s": loop_total, "vmapped_s": vmap_total, "speedup": loop_total / vmap_total}
    out = {"model": f"llama {args.layers}x{args.width}, vocab {args.vocab}", "seeds": args.seeds,
           "rollouts": args.prompts, "new_tokens": args.new_tokens, **results,
           "device": jax.devices()[0].device_kind}  # fmt: skip
    lines = [f"{args.seeds} seeds, {out['model']}, {args.prompts} rollouts of {args.new_tokens} tokens\n\n",
             "| piece | seeds in a loop (s) | seeds vmapped (s) | speedup of vmap | largest difference |\n"
             "|---|---|---|---|---|\n"]  # fmt: skip
    lines += [f"| {k} | {r['loop_s']:.3f} | {r['vmapped_s']:.3f} | {r['speedup']:.2f}x | "
              f"{r.get('max_abs_difference', float('nan')):.1e} |\n" for k, r in results.items()]  # fmt: skip
    save_results("lab_seeds", out, "".join(lines))


if __name__ == "__main__":
    main()
