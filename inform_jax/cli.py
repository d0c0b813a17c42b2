"""The `inform-jax` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from inform_jax.demo import run_forward_example

    run_forward_example(seed=args.seed)
    return 0


def _train_rm(args: argparse.Namespace) -> int:
    import jax

    from inform_jax.train.config import load_config
    from inform_jax.train.rm_data import load_tokenizer, prepare_pairs
    from inform_jax.train.rm_trainer import RewardModelTrainer

    overrides = list(args.set or [])
    if args.method:
        overrides.append(f"method={args.method}")
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    config = load_config(args.config, overrides)
    if args.distributed:
        jax.distributed.initialize()  # one process per host on a TPU pod / GPU cluster
    if not config.data.train:
        raise SystemExit("data.train is required (a preference file)")
    tokenizer_path = config.data.tokenizer or config.model.path
    if not tokenizer_path:
        raise SystemExit("data.tokenizer (or model.path) is required to tokenize the data")
    tokenizer = load_tokenizer(tokenizer_path)
    train = prepare_pairs(config.data.train, tokenizer, config.data)
    held_out = prepare_pairs(config.data.eval, tokenizer, config.data) if config.data.eval else None
    trainer = RewardModelTrainer(config, train, held_out)
    trainer.fit()
    if held_out is not None:
        print("held-out:", trainer.evaluate())
    print(f"reward model saved to {config.train.output_dir}/final")
    return 0


def _plan(args: argparse.Namespace) -> int:
    import json

    from inform_jax.train.config import load_config
    from inform_jax.train.plan import format_plan, plan_rm_train_step, topology_devices

    config = load_config(args.config, list(args.set or []))
    plan = plan_rm_train_step(config, topology_devices(args.topology), num_layers=args.layers)
    print(format_plan(plan))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"topology": args.topology, "method": config.method, **plan}, f, indent=2)
    return 0 if plan["fits"] is not False else 1


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

    from inform_jax.train.config import describe_fields

    train_rm = sub.add_parser(
        "train-rm",
        help="Train a reward model: standard, InfoRM, ODIN, ensemble, WARM (and InfoRM + ensemble / WARM).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a reward model from a YAML config, with section.key=value overrides.\n\n"
        "Methods: standard (Bradley-Terry, scalar head); inform (InfoRM: IB latent, BT + beta * KL);\n"
        "odin (quality + length heads; RL uses the quality head); ensemble (k members, aggregated reward);\n"
        "warm (k members fine-tuned from one init with different data orders, weights averaged);\n"
        "inform+ensemble, inform+warm (the same with IB heads).",
        epilog="config keys:\n" + describe_fields(),
    )
    train_rm.add_argument("--config", help="YAML config file (see experiments/rm/)")
    train_rm.add_argument("--method", help="override the config's method")
    train_rm.add_argument("--output-dir", help="override train.output_dir")
    train_rm.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    train_rm.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host TPU / GPU)"
    )
    train_rm.set_defaults(func=_train_rm)

    plan = sub.add_parser(
        "plan",
        help="Compile the RM train step ahead of time for a TPU topology and print per-device memory.",
        description="Needs the tpu extra (libtpu); runs on any CPU machine, no TPU used.",
    )
    plan.add_argument("--config", required=True, help="YAML config (model.path or model.preset gives the model)")
    plan.add_argument("--topology", required=True, help='TPU topology, e.g. "v5p:2x4x4", "v5e:4x4", "v4:2x2x2"')
    plan.add_argument("--layers", type=int, help="plan a shallower model of the same width (faster compile)")
    plan.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    plan.add_argument("--json", help="also write the plan as JSON to this file")
    plan.set_defaults(func=_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
