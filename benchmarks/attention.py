"""One causal self-attention layer, forward + backward: our CPU backends against PyTorch's SDPA, in this process.

Ours: `jax.nn.dot_product_attention` (XLA; `model.attention_impl=jax`, the default before the backends), the float32
einsum over the whole [T, T] square (`einsum`) and the einsum that skips the masked blocks (`blocked`, what `auto`
takes on the CPU), each as one jitted value-and-gradient of sum(out^2) with respect to q, k and v. The peer:
`torch.nn.functional.scaled_dot_product_attention(is_causal=True)` and its backward, on the same float32 inputs.
Each side's time is the median over `--repeats` calls after a warm-up, our side and the peer alternating; the
outputs are checked equal first.

    python benchmarks/attention.py                           # 16 rows x 256 tokens, 8 heads of 64
    python benchmarks/attention.py --rows 4 --length 1024
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from _common import paired_median_seconds, save_results

from inform_jax.models.attention import SelfAttentionMask, self_attention

IMPLS = ("jax", "einsum", "blocked")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count())
    b, t, h, d = args.rows, args.length, args.heads, args.head_dim
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((b, t, h, d)).astype(np.float32) for _ in range(3))
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    mask = SelfAttentionMask(positions, jnp.ones((b, t), bool), 0)
    tq, tk, tv = (torch.tensor(x).transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v))

    def peer():
        out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
        (out**2).sum().backward()
        return out

    want = peer().detach().transpose(1, 2).numpy()
    result = {"rows": b, "length": t, "heads": h, "head_dim": d, "repeats": args.repeats, "dtype": "float32",
              "device": jax.devices()[0].device_kind, "jax": jax.__version__, "torch": torch.__version__,
              "ours": {}}  # fmt: skip
    jq, jk, jv = (jnp.asarray(x) for x in (q, k, v))
    for impl in IMPLS:

        def loss(q, k, v, impl=impl):
            out = self_attention(q, k, v, mask, impl=impl)
            return jnp.sum(out**2), out

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
        (_, out), _ = step(jq, jk, jv)
        error = float(np.max(np.abs(np.asarray(out) - want)))
        ours_s, peer_s = paired_median_seconds(lambda step=step: jax.block_until_ready(step(jq, jk, jv)), peer,
                                               args.repeats)  # fmt: skip
        result["ours"][impl] = {"ms": 1e3 * ours_s, "torch_ms": 1e3 * peer_s, "ratio_over_torch": peer_s / ours_s,
                                "max_abs_diff_output": error}  # fmt: skip
    rows = "".join(
        f"| {impl} | {r['ms']:.1f} | {r['torch_ms']:.1f} | {r['ratio_over_torch']:.2f} | "
        f"{r['max_abs_diff_output']:.1e} |\n"
        for impl, r in result["ours"].items()
    )
    table = (f"Causal attention forward + backward, {b} rows x {t} tokens, {h} heads of {d}, float32\n\n"
             "| ours | ms | PyTorch SDPA ms (same run) | ours / PyTorch | largest output difference |\n"
             f"|---|---|---|---|---|\n{rows}")  # fmt: skip
    save_results(f"attention-{b}x{t}", result, table)


if __name__ == "__main__":
    main()
