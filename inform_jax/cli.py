"""The `inform-jax` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from inform_jax.demo import run_forward_example

    run_forward_example(seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inform-jax",
        description="Reward models that resist reward hacking (InfoRM, CSI, EPPO, reward decomposition) in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="Run the built-in example on a tiny random model (no downloads).",
        description="For now: a forward pass of tiny random Llama and Pythia models, printing what one pass "
        "exposes (logits, per-layer energy loss, pooled reward features). The reward-hacking laboratory "
        "replaces it in a later release.",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed for the tiny models (default 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
