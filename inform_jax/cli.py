"""The `inform-jax` command line: each subcommand's arguments (``_add_<name>``) stand right above its handler."""

from __future__ import annotations

import argparse
import sys


def _add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "multi-host", "one process per host (a TPU pod slice, GPU nodes): every host runs the same command"
    )
    group.add_argument("--distributed", action="store_true", help="join the other processes before any JAX work; "
                       "without --coordinator JAX detects the cluster (TPU pods, SLURM)")  # fmt: skip
    group.add_argument("--coordinator", help="process 0's address, HOST:PORT (the same on every process)")
    group.add_argument("--num-processes", type=int, help="how many processes in all")
    group.add_argument("--process-id", type=int, help="this process's index, 0 .. num-processes - 1")


def _initialize_distributed(args: argparse.Namespace) -> None:
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed:
        if any(x is not None for x in explicit):
            raise SystemExit("--coordinator, --num-processes and --process-id go with --distributed")
        return
    import jax

    if all(x is None for x in explicit):
        jax.distributed.initialize()  # auto-detected: Cloud TPU, SLURM, ...
        return
    if any(x is None for x in explicit):
        raise SystemExit("--distributed with a --coordinator needs all three: --coordinator, --num-processes, "
                         "--process-id")  # fmt: skip
    jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)


def _add_token_budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-budget", type=int, default=32768, help="padded tokens per scoring batch (default "
                        "32768): rows go longest first, each batch cut to its longest row's bucket")  # fmt: skip


def _fit(trainer):
    """trainer.fit(); a preemption (checkpoint saved) or a folder with no usable checkpoint ends the command with a
    message and an exit code instead of a traceback (75 for a preemption: run the same command again)."""
    from inform_jax.train.checkpoints import CheckpointsUnusable
    from inform_jax.train.preemption import PREEMPTED_EXIT_CODE, Preempted

    try:
        return trainer.fit()
    except Preempted as stop:
        print(stop, flush=True)
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    except CheckpointsUnusable as err:
        raise SystemExit(str(err)) from None


def _add_demo(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="The reward-hacking laboratory on the synthetic world (no downloads; minutes on a laptop).",
        description="Trains a weak SFT policy and proxy reward models (standard, InfoRM, ensemble) on the synthetic "
        "world at 25%% label noise, runs PPO against each, PPO with a KL penalty, EPPO and the oracle arm (PPO on "
        "the gold reward itself), reads every method's held-out gold and exact KL from SFT at checkpoints, and "
        "writes a report folder: held-out gold and proxy reward against KL, gold at matched KL with paired "
        "intervals against PPO, final-layer energy loss, SFT vs RLHF outputs in InfoRM's latent space with CSI, "
        "win / tie / lose by the gold judge (report.md, report.html, metrics.json, config.json). The SFT policy "
        "and reward models are cached under --cache.",
    )
    demo.add_argument("--quick", action="store_true", help="a smaller laboratory (under 2 minutes)")
    demo.add_argument("--out", default="inform-jax-lab", help="report folder (default ./inform-jax-lab)")
    demo.add_argument("--cache", help="cache folder for the world, SFT policy and reward models "
                      "(default ~/.cache/inform-jax/lab)")  # fmt: skip
    demo.add_argument("--seed", type=int, default=0, help="seed of the world, models and RL (default 0)")
    demo.add_argument("--iterations", type=int, help="RL iterations per method (default 80; --quick 12)")
    demo.add_argument("--hidden-size", type=int, help="model width (default 64; --quick 32)")
    demo.add_argument("--label-noise", type=float, help="preference label noise (default 0.25)")
    demo.add_argument(
        "--methods",
        nargs="+",
        help="default: PPO, 'PPO w/ KL', InfoRM, 'Ensemble RM', EPPO, Oracle; also WARM, 'PPO w/ LP', "
        "'EPPO + InfoRM' and the rest of inform_jax.lab.config.METHODS (PPO is the matched-KL reference)",
    )
    demo.add_argument("--report-to", nargs="+", default=["jsonl"], choices=["jsonl", "tensorboard", "wandb"],
                      help="also send each method's metrics (runs/<method>/) and the report's figures to TensorBoard "
                      "or W&B")  # fmt: skip
    demo.add_argument("--forward", action="store_true", help="only print one forward pass of tiny random models")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.forward:
        from inform_jax.demo import run_forward_example

        run_forward_example(seed=args.seed)
        return 0
    from inform_jax.lab.demo import demo_config, run_demo

    config = demo_config(
        args.quick, seed=args.seed, ppo_iterations=args.iterations, hidden_size=args.hidden_size,
        label_noise=args.label_noise, methods=tuple(args.methods) if args.methods else None,
        report_to=tuple(args.report_to),
    )  # fmt: skip
    run_demo(config, args.out, cache_dir=args.cache)
    return 0


def _add_train_rm(sub) -> None:
    from inform_jax.train.config import describe_fields
    from inform_jax.train.rm.methods import describe_methods

    train_rm = sub.add_parser(
        "train-rm",
        help="Train a reward model: standard, InfoRM, ODIN, ensembles, WARM, prioritized (dir), RRM, ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a reward model from a YAML config, with section.key=value overrides.\n\n"
        "Methods:\n" + describe_methods(),
        epilog="config keys:\n" + describe_fields(),
    )
    train_rm.add_argument("--config", help="YAML config file (see experiments/rm/)")
    train_rm.add_argument("--method", help="override the config's method")
    train_rm.add_argument("--output-dir", help="override train.output_dir")
    train_rm.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    train_rm.add_argument("--allow-config-change", action="store_true",
                          help="resume a run folder whose config changed (logged in config_changes.jsonl)")  # fmt: skip
    _add_distributed_arguments(train_rm)
    train_rm.set_defaults(func=_train_rm)


def _train_rm(args: argparse.Namespace) -> int:
    import jax

    from inform_jax.train.config import load_config
    from inform_jax.train.rm.trainer import RewardModelTrainer

    overrides = list(args.set or [])
    if args.method:
        overrides.append(f"method={args.method}")
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    if args.allow_config_change:
        overrides.append("train.allow_config_change=true")
    config = load_config(args.config, overrides)
    _initialize_distributed(args)
    if not config.data.train:
        raise SystemExit("data.train is required (a preference file)")
    if not (config.data.tokenizer or config.model.path):
        raise SystemExit("data.tokenizer (or model.path) is required to tokenize the data")
    trainer = RewardModelTrainer.from_config(config)
    tokenizer = trainer.tokenizer
    held_out = trainer.eval_arrays
    _fit(trainer)
    if jax.process_index() == 0:  # the final folder is then self-contained for `detect` and `ppo`
        tokenizer.save_pretrained(f"{config.train.output_dir}/final")
    if held_out is not None:
        print("held-out:", trainer.evaluate())
    print(f"reward model saved to {config.train.output_dir}/final")
    return 0


def _add_plan(sub) -> None:
    plan = sub.add_parser(
        "plan",
        help="Compile the RM train step or the PPO update ahead of time for a TPU topology; print per-device memory.",
        description="Needs the tpu extra (libtpu); runs on any CPU machine, no TPU used.",
    )
    plan.add_argument(
        "--program", choices=["rm", "ppo"], default="rm",
        help="rm: the reward-model train step of a train-rm config; ppo: one minibatch update (actor and critic) of "
        "a ppo config, its rollouts at max_prompt_length + max_new_tokens",
    )  # fmt: skip
    plan.add_argument("--config", required=True, help="YAML config (model.path or model.preset gives the model)")
    plan.add_argument("--topology", required=True, help='TPU topology, e.g. "v5p:2x4x4", "v5e:4x4", "v4:2x2x2"')
    plan.add_argument("--layers", type=int, help="plan a shallower model of the same width (faster compile)")
    plan.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    plan.add_argument("--json", help="also write the plan as JSON to this file")
    plan.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    import json

    from inform_jax.train.config import load_config
    from inform_jax.train.plan import format_plan, plan_ppo_update, plan_rm_train_step, topology_devices
    from inform_jax.train.ppo.config import PPOConfig

    devices = topology_devices(args.topology)
    if args.program == "ppo":
        config = load_config(args.config, list(args.set or []), cls=PPOConfig)
        # One minibatch of the config's rollouts at their longest: prompt + generated tokens.
        plan = plan_ppo_update(
            config, devices, minibatch=config.rollout.batch_size // config.ppo.minibatches,
            prompt_len=config.data.max_prompt_length, response_len=config.rollout.max_new_tokens,
            num_layers=args.layers,
        )  # fmt: skip
        label = {"program": "ppo update"}
    else:
        config = load_config(args.config, list(args.set or []))
        plan = plan_rm_train_step(config, devices, num_layers=args.layers)
        label = {"program": "rm train step", "method": config.method}
    print(format_plan(plan))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"topology": args.topology, **label, **plan}, f, indent=2)
    return 0 if plan["fits"] is not False else 1


def _add_ppo(sub) -> None:
    import textwrap

    from inform_jax.train.ppo.config import describe_fields

    description = (
        "PPO with optional per-token KL penalty (kl.coef, k1/k2/k3, adaptive), length penalty "
        "(length_penalty.enabled) or EPPO's energy penalty (energy.eta > 0: r - eta * |dE_SFT - dE_policy| on the "
        "final layer), IBL (ibl.coef > 0: r - coef * Mahalanobis distance of the reward model's latent to the SFT "
        "latents), and CSI / MOP detection every detect.every iterations; reward.gold=world logs the synthetic world's "
        "gold reward beside the proxy. See experiments/ppo/ for configs."
    )
    ppo = sub.add_parser(
        "ppo",
        help="PPO / EPPO against a reward model (or the synthetic world's gold reward).",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the key list one key a line
        description=textwrap.fill(description, 100),
        epilog="config keys:\n" + describe_fields(),
    )
    ppo.add_argument("--config", help="YAML config file")
    ppo.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    ppo.add_argument("--allow-config-change", action="store_true",
                     help="resume a run folder whose config changed (logged in config_changes.jsonl)")  # fmt: skip
    _add_distributed_arguments(ppo)
    ppo.set_defaults(func=_ppo)


def _ppo(args: argparse.Namespace) -> int:
    import os

    import jax

    from inform_jax.models import save_pretrained
    from inform_jax.train.config import load_config
    from inform_jax.train.ppo.build import build_ppo
    from inform_jax.train.ppo.config import PPOConfig

    overrides = [*(args.set or []), *(["train.allow_config_change=true"] if args.allow_config_change else [])]
    config = load_config(args.config, overrides, cls=PPOConfig)
    _initialize_distributed(args)
    if not config.policy.path or not config.data.prompts:
        raise SystemExit("policy.path (the SFT model folder) and data.prompts are required")
    if config.reward.kind == "model" and not config.reward.path:
        raise SystemExit("reward.path (a reward model folder from train-rm) is required")
    trainer = build_ppo(config)
    final = _fit(trainer)
    out = os.path.join(config.train.output_dir, "final")
    save_pretrained(final, out)  # every process gathers its shards; process 0 writes
    if jax.process_index() == 0:
        trainer.tokenizer.save_pretrained(out)
    print(f"policy saved to {out}")
    return 0


def _add_detect(sub) -> None:
    detect = sub.add_parser(
        "detect",
        help="Detect overoptimization: CSI, MOP and AUROC of RLHF vs SFT outputs in a reward model's latent space.",
        description="Embed (prompt, response) JSONL files (columns prompt, response, optional boolean 'hacked') "
        "with a reward model (InfoRM: IB latent means; standard RM: final hidden state), then report the Cluster "
        "Separation Index with its per-cluster table, the Mahalanobis outlier proportion (MOP), and with labels "
        "the AUROC of distance-to-SFT. Several --rlhf files (checkpoints, with --steps) add CSI over steps and "
        "CSI-guided checkpoint selection. Writes report.json and PNG figures to --out.",
    )
    detect.add_argument("--rm", required=True, help="reward model folder (train-rm output, e.g. RUN/final, "
                        "or a transformers *ForSequenceClassification folder)")  # fmt: skip
    detect.add_argument("--sft", required=True, help="SFT responses file (prompt, response)")
    detect.add_argument("--rlhf", required=True, nargs="+", help="RLHF responses file(s), one per checkpoint")
    detect.add_argument("--out", required=True, help="output folder")
    detect.add_argument("--steps", type=int, nargs="+", help="RL step of each --rlhf file (default 0, 1, ...)")
    detect.add_argument("--control-rm", help="a second reward model analyzed the same way (the paper's control)")
    detect.add_argument("--tokenizer", help="tokenizer folder (default: the reward model folder)")
    detect.add_argument("--feature", default="auto", choices=["auto", "latent", "hidden"],
                        help="auto: IB latent mean for InfoRM, final hidden state otherwise")  # fmt: skip
    detect.add_argument("--clustering", default="kmeans", choices=["kmeans", "dbscan"])
    detect.add_argument("--k", type=int, help="k-means k (default: chosen by --k-rule)")
    detect.add_argument("--k-rule", default="silhouette", choices=["silhouette", "sqrt"])
    detect.add_argument("--k-range", type=int, nargs=2, default=[2, 10], metavar=("MIN", "MAX"))
    detect.add_argument("--eps", type=float, help="DBSCAN eps (default: k-distance knee)")
    detect.add_argument("--min-samples", type=int, default=5, help="DBSCAN min_samples (default 5)")
    detect.add_argument("--projection", choices=["tsne"], help="cluster in a 2-D t-SNE projection")
    detect.add_argument("--plot-projection", default="tsne", choices=["tsne", "pca"])
    detect.add_argument("--alpha", type=float, default=0.1, help="MOP chi-square test level (default 0.1)")
    detect.add_argument("--rise", type=float, default=0.5, help="selection: CSI threshold (1 + rise) * first CSI")
    detect.add_argument("--threshold", type=float, help="selection: an absolute CSI threshold instead")
    detect.add_argument("--max-length", default="auto", help="token length (default auto)")
    detect.add_argument("--batch-size", type=int, default=32)
    _add_token_budget(detect)
    detect.add_argument("--seed", type=int, default=0)
    _add_distributed_arguments(detect)
    detect.set_defaults(func=_detect)


def _detect(args: argparse.Namespace) -> int:
    from inform_jax.detect.report import DetectOptions, run_detect

    _initialize_distributed(args)
    options = DetectOptions(
        clustering=args.clustering, k=args.k, k_rule=args.k_rule, k_range=tuple(args.k_range), eps=args.eps,
        min_samples=args.min_samples, projection=args.projection, alpha=args.alpha,
        plot_projection=args.plot_projection, rise=args.rise, threshold=args.threshold, seed=args.seed,
    )  # fmt: skip
    run_detect(
        args.rm, args.sft, args.rlhf, args.out, steps=args.steps, control_rm=args.control_rm, feature=args.feature,
        tokenizer=args.tokenizer,
        max_length=args.max_length if args.max_length == "auto" else int(args.max_length),
        batch_size=args.batch_size, token_budget=args.token_budget, options=options,
    )  # fmt: skip
    return 0


def _add_decompose(sub) -> None:
    decompose = sub.add_parser(
        "decompose",
        help="Per-pair prompt-free (dr2) and prompt-related (dr1) reward gaps, with the quadrant plot.",
        description="Score each pair's responses under its own prompt and N prompts of other pairs, estimate the "
        "prompt-free gap dr2 (root of sum_i w_i sigmoid(dr_i - c) = 1/2, or the logit estimator) and dr1 = dr - "
        "dr2. Writes pairs.jsonl, summary.json (quadrant shares, prompt diagnostics) and quadrants.png.",
    )
    decompose.add_argument("--rm", required=True, help="reward model folder (ours or a transformers classifier)")
    decompose.add_argument("--data", required=True, help="preference file (hh, implicit, prompt or messages format)")
    decompose.add_argument("--out", required=True, help="output folder")
    decompose.add_argument("--tokenizer", help="tokenizer folder (default: the reward model folder)")
    decompose.add_argument("--color", default="length",
                           help="red points: 'length' (chosen longer) or a boolean column name")  # fmt: skip
    decompose.add_argument("--num-prompts", type=int, default=8)
    decompose.add_argument("--estimator", default="bisection", choices=["bisection", "logit"])
    decompose.add_argument("--weights", default="uniform", choices=["uniform", "reward"])
    decompose.add_argument("--tau", type=float, default=1.0)
    decompose.add_argument("--max-length", type=int, default=512)
    decompose.add_argument("--seed", type=int, default=0)
    _add_token_budget(decompose)
    _add_distributed_arguments(decompose)
    decompose.set_defaults(func=_decompose)


def _decompose(args: argparse.Namespace) -> int:
    from inform_jax.eval.decomposition_report import run_decompose

    _initialize_distributed(args)
    run_decompose(
        args.rm, args.data, args.out, tokenizer=args.tokenizer, color=args.color, num_prompts=args.num_prompts,
        estimator=args.estimator, weights=args.weights, tau=args.tau, max_length=args.max_length, seed=args.seed,
        token_budget=args.token_budget,
    )  # fmt: skip
    return 0


def _add_evaluate_rm(sub) -> None:
    evaluate = sub.add_parser(
        "evaluate-rm",
        help="Accuracy per subset and category of RewardBench-format files, and the prompt diagnostics.",
    )
    evaluate.add_argument("--rm", required=True, help="reward model folder (ours or a transformers classifier)")
    evaluate.add_argument("--data", required=True, help="file with prompt, chosen, rejected (and subset)")
    evaluate.add_argument("--tokenizer", help="tokenizer folder (default: the reward model folder)")
    evaluate.add_argument("--subset-column", default="subset")
    evaluate.add_argument("--max-length", type=int, default=2048, help="truncation only (default 2048)")
    evaluate.add_argument("--no-diagnostics", action="store_true", help="skip the prompt-swap diagnostics")
    evaluate.add_argument("--out", help="also write the report as JSON here")
    _add_token_budget(evaluate)
    _add_distributed_arguments(evaluate)
    evaluate.set_defaults(func=_evaluate_rm)


def _evaluate_rm(args: argparse.Namespace) -> int:
    import json

    import jax

    from inform_jax.eval.decomposition_report import run_evaluate

    _initialize_distributed(args)
    report = run_evaluate(
        args.rm, args.data, tokenizer=args.tokenizer, subset_column=args.subset_column, max_length=args.max_length,
        diagnostics=not args.no_diagnostics, token_budget=args.token_budget,
    )  # fmt: skip
    if jax.process_index() == 0:  # every host computed the report; one prints and writes it
        print(json.dumps(report, indent=2))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    return 0


def _add_export_rm(sub) -> None:
    export = sub.add_parser(
        "export-rm",
        help="Write a reward model as a transformers *ForSequenceClassification folder (RewardBench, TRL, ...).",
        description="Writes a folder that transformers.AutoModelForSequenceClassification loads, with the tokenizer; "
        "its logits[:, 0] is the reward. The tokenizer appends eos to every text (the reward is read at an appended "
        "eos) and pads with a token the vocabulary already has that is not eos. Standard, InfoRM (linear decoder) "
        "and ODIN (quality head) reward models export exactly; an ensemble writes member_<i>/ folders and "
        "ensemble_export.json; an InfoRM with the gated decoder is refused.",
    )
    export.add_argument("--rm", required=True, help="reward model folder (e.g. RUN/final)")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--tokenizer", help="tokenizer folder (default: the reward model folder)")
    export.add_argument("--pad-token", help="the pad token to use: one the vocabulary has, not eos (default: the "
                        "tokenizer's pad, a known pad name or a reserved token)")  # fmt: skip
    export.set_defaults(func=_export_rm)


def _export_rm(args: argparse.Namespace) -> int:
    from inform_jax.models.hf_export import ExportError, export_reward_model

    try:
        folders = export_reward_model(args.rm, args.out, tokenizer=args.tokenizer, pad_token=args.pad_token)
    except ExportError as err:
        raise SystemExit(f"export-rm: {err}") from None
    for folder in folders:
        print(f"wrote {folder}")
    return 0


def _add_generate(sub) -> None:
    gen = sub.add_parser(
        "generate",
        help="Responses of a policy checkpoint to a prompt file, written as prompt/response JSONL (for detect and "
        "win-rate).",
    )
    gen.add_argument("--policy", required=True, help="policy folder (Hugging Face layout, e.g. ppo's final/)")
    gen.add_argument("--prompts", required=True, help="prompt file (.jsonl / .json / .parquet)")
    gen.add_argument("--out", required=True, help="JSONL file to write")
    gen.add_argument("--tokenizer", help="tokenizer folder (default: the policy folder)")
    gen.add_argument("--column", default="prompt", help="the prompt column (default prompt)")
    gen.add_argument("--limit", type=int, help="the first N prompts only")
    gen.add_argument("--max-new-tokens", type=int, default=256)
    gen.add_argument("--max-prompt-length", default="auto", help="prompt tokens (default auto; long prompts keep "
                     "their end)")  # fmt: skip
    gen.add_argument("--batch-size", type=int, default=16)
    gen.add_argument("--sample", action="store_true", help="sample (default: greedy, as the papers evaluate)")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--seed", type=int, default=0)
    _add_distributed_arguments(gen)
    gen.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from inform_jax.eval.generation import generate_file

    _initialize_distributed(args)
    generate_file(
        args.policy, args.prompts, args.out, tokenizer_dir=args.tokenizer, column=args.column, limit=args.limit,
        dtype=args.dtype, max_new_tokens=args.max_new_tokens, max_prompt_length=args.max_prompt_length,
        batch_size=args.batch_size, greedy=not args.sample, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, seed=args.seed,
    )  # fmt: skip
    return 0


def _add_win_rate(sub) -> None:
    win_rate = sub.add_parser(
        "win-rate",
        help="Win / tie / lose of policy A's responses against policy B's, judged in both presentation orders.",
        description="Pair the responses of two (prompt, response) files by prompt text and judge each pair twice "
        "(A shown first, then B first); a win or loss counts only when both orders agree beyond --margin, anything "
        "else is a tie (a position-biased judge gives ties). win_rate = win + tie / 2. Judges: 'rm:PATH' (a reward "
        "model folder: preference = reward difference), 'chat:BASE_URL' with --model (an OpenAI-compatible "
        "chat-completions endpoint answering 'Verdict: A|B|tie' to inform_jax/eval/prompts/pairwise.txt; key from "
        "OPENAI_API_KEY), 'gold' (the synthetic world's gold reward). Default --margin: 0 for chat judges (their "
        "preferences are -1/0/+1), 0.05 for gold (the lab's tie margin; gold is in [-1, 1]); a reward-model judge "
        "needs --margin, since reward scales are arbitrary.",
    )
    win_rate.add_argument("--a", required=True, help="responses of policy A (prompt, response)")
    win_rate.add_argument("--b", required=True, help="responses of policy B to the same prompts")
    win_rate.add_argument("--judge", required=True, help="rm:PATH, chat:BASE_URL or gold")
    win_rate.add_argument("--model", help="chat judge: the model name the endpoint serves")
    win_rate.add_argument("--margin", type=float, help="tie margin (default: 0 chat, 0.05 gold; required for rm)")
    win_rate.add_argument("--out", help="also write the report with per-item verdicts as JSON here")
    win_rate.add_argument("--template", help="chat judge: a judging template file (default the packaged one)")
    win_rate.add_argument("--workers", type=int, default=4, help="chat judge: concurrent requests (default 4)")
    win_rate.add_argument("--timeout", type=float, default=60.0, help="chat judge: seconds per request (default 60)")
    win_rate.add_argument("--deadline", type=float, default=180.0,
                          help="chat judge: seconds per question across retries (default 180)")  # fmt: skip
    win_rate.add_argument("--on-unparsed", default="raise", choices=["raise", "tie"],
                          help="chat judge: a reply with no verdict raises (default) or counts as a tie")  # fmt: skip
    win_rate.add_argument("--tokenizer", help="rm judge: tokenizer folder (default: the reward model folder)")
    win_rate.add_argument("--max-length", default="auto", help="rm judge: token length (default auto)")
    win_rate.add_argument("--batch-size", type=int, default=32, help="rm judge: rows per batch (default 32)")
    _add_token_budget(win_rate)
    win_rate.set_defaults(func=_win_rate)


def _win_rate(args: argparse.Namespace) -> int:
    import json

    from inform_jax.data.preference import load_responses
    from inform_jax.eval import default_margin, judge_kind, load_judge, load_template, match_by_prompt, win_rate_report

    try:
        kind = judge_kind(args.judge)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    margin = args.margin if args.margin is not None else default_margin(args.judge)
    if margin is None:
        raise SystemExit("--margin is required for a reward-model judge: a reward model's scale is arbitrary, "
                         "so no tie margin fits every one (gold defaults to 0.05, chat judges to 0)")  # fmt: skip
    if margin < 0 or (kind == "chat" and margin >= 1):
        raise SystemExit(f"--margin must be >= 0 (and < 1 for a chat judge, whose preferences are -1/0/+1), "
                         f"got {margin}")  # fmt: skip
    if kind != "chat" and (args.model or args.template):
        raise SystemExit("--model and --template are for chat judges (--judge chat:BASE_URL)")
    if kind == "chat" and not args.model:
        raise SystemExit("--model is required with a chat judge (the model name the endpoint serves)")
    tokenizer = None
    if kind == "rm":  # messages-format prompts are rendered with the reward model's chat template
        from inform_jax.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer or args.judge.partition(":")[2])
    rows_a, report_a = load_responses(args.a, label_column=None, tokenizer=tokenizer)
    rows_b, report_b = load_responses(args.b, label_column=None, tokenizer=tokenizer)
    print(report_a)
    print(report_b)
    prompts, responses_a, responses_b, unmatched = match_by_prompt(rows_a, rows_b, path_a=args.a, path_b=args.b)
    if unmatched:
        print(f"{args.b}: {unmatched} rows answer prompts that {args.a} lacks; left out")
    options: dict = {}
    if kind == "chat":
        template = load_template(args.template) if args.template else None
        options = {"model": args.model, "on_unparsed": args.on_unparsed, "workers": args.workers, "template": template,
                   "timeout": args.timeout, "deadline": args.deadline}  # fmt: skip
    elif kind == "rm":
        max_length = args.max_length if args.max_length == "auto" else int(args.max_length)
        options = {"tokenizer": tokenizer, "batch_size": args.batch_size, "max_length": max_length,
                   "token_budget": args.token_budget}  # fmt: skip
    judge = load_judge(args.judge, **options)
    report = win_rate_report(judge, prompts, responses_a, responses_b, margin)
    summary = {"judge": args.judge, "margin": margin, **{k: report[k] for k in ("win", "tie", "lose", "win_rate", "n")}}
    if kind == "chat":
        summary["unparsed"] = judge.unparsed  # replies counted as ties (--on-unparsed tie)
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**summary, "model": args.model, "a": args.a, "b": args.b, "items": report["items"]}, f, indent=2)
        print(f"per-item verdicts written to {args.out}")
    return 0


# Each subcommand: its arguments (_add_*) right above its handler.
SUBCOMMANDS = (
    _add_demo, _add_train_rm, _add_plan, _add_ppo, _add_detect, _add_decompose, _add_evaluate_rm, _add_export_rm,
    _add_generate, _add_win_rate,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inform-jax",
        description="Reward models that resist reward hacking (InfoRM, CSI, EPPO, reward decomposition) in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from inform_jax.hub import HubNameError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HubNameError as err:  # a mistyped path or an id not in the offline cache: one line, not a traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
