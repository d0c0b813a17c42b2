"""CSI detection at real scale (the InfoRM paper's overoptimization-detection study): the SFT policy and RLHF
checkpoints answer the prompts of AlpacaFarm, FalseQA, Flan and HelpSteer (each file in its released format),
and their responses are compared in InfoRM's IB latent space (CSI, MOP, t-SNE plots, CSI-guided checkpoint
selection), with a standard reward model's hidden space as the control.

    python experiments/detection/csi_detection.py --rm runs/llama3-8b-alpacafarm-inform/final \\
        --control-rm runs/llama3-8b-alpacafarm-standard/final --sft /data/models/llama-3-8b-sft \\
        --rlhf runs/ppo/step_100 runs/ppo/step_200 runs/ppo/final --steps 100 200 300 \\
        --data alpacafarm=/data/alpaca_farm_evaluation.json falseqa=/data/FalseQA/test.csv \\
               flan=/data/flan/sample.jsonl helpsteer=/data/HelpSteer/validation.jsonl --out runs/csi
    python experiments/detection/csi_detection.py --smoke   # tiny random checkpoints and the 5-row fixtures

Writes OUT/<dataset>/{sft.jsonl, rlhf-step<N>.jsonl, detect/report.json, detect/*.png} and OUT/summary.json.
Generations that exist are reused, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from experiments.smoke import _texts, check_required, study_main, tiny_checkpoint  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SMOKE_DATA = {
    "alpacafarm": os.path.join(FIXTURES, "alpacafarm_eval.json"),
    "falseqa": os.path.join(FIXTURES, "falseqa.csv"),
    "flan": os.path.join(FIXTURES, "flan.jsonl"),
    "helpsteer": os.path.join(FIXTURES, "helpsteer.jsonl"),
}


def _data_specs(items: list[str]) -> dict[str, str]:
    from inform_jax.data.formats import PROMPT_READERS

    specs = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in PROMPT_READERS:
            raise SystemExit(f"--data {item!r}: expected DATASET=PATH with DATASET in {sorted(PROMPT_READERS)}")
        specs[name] = path
    return specs


def generate_all(args, datasets: dict[str, str]) -> dict[str, dict]:
    """For each dataset: its prompts, and the SFT and RLHF responses files (generated unless they exist)."""
    from inform_jax.data.formats import read_dataset_prompts
    from inform_jax.data.tokenizer import load_tokenizer
    from inform_jax.eval.generation import generate_responses, write_responses
    from inform_jax.models import from_pretrained

    plan = {}
    for name, path in datasets.items():
        prompts, counts = read_dataset_prompts(name, path, template=args.template)
        prompts = prompts[: args.num_prompts] if args.num_prompts else prompts
        print(f"{name}: {path}: {counts['rows']} rows, {counts['prompts']} distinct prompts, using {len(prompts)}")
        folder = os.path.join(args.out, name)
        files = {"sft": os.path.join(folder, "sft.jsonl")}
        files |= {f"step{s}": os.path.join(folder, f"rlhf-step{s}.jsonl") for s in args.steps}
        plan[name] = {"prompts": prompts, "files": files, "data": path, "counts": counts}
    tokenizer = load_tokenizer(args.sft)
    sampling = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "greedy": not args.sample,
                "temperature": args.temperature, "seed": args.seed}  # fmt: skip
    for key, policy_dir in [("sft", args.sft), *((f"step{s}", d) for s, d in zip(args.steps, args.rlhf, strict=True))]:
        todo = [name for name, p in plan.items() if not os.path.exists(p["files"][key])]
        if not todo:
            continue
        policy = from_pretrained(policy_dir)
        for name in todo:
            responses = generate_responses(policy, tokenizer, plan[name]["prompts"], **sampling)
            write_responses(plan[name]["files"][key], plan[name]["prompts"], responses)
            print(f"{name}: {len(responses)} responses of {policy_dir} -> {plan[name]['files'][key]}")
    return plan


def run_study(args) -> dict:
    from inform_jax.detect.report import DetectOptions, run_detect

    if len(args.rlhf) != len(args.steps):
        raise SystemExit(f"{len(args.rlhf)} --rlhf checkpoints but {len(args.steps)} --steps")
    plan = generate_all(args, _data_specs(args.data))
    options = DetectOptions(k=args.k, k_rule=args.k_rule, k_range=tuple(args.k_range), seed=args.seed,
                            plot_projection=args.plot_projection)  # fmt: skip
    summary = {"command": " ".join(sys.argv), "datasets": {}}
    for name, p in plan.items():
        report = run_detect(
            args.rm, p["files"]["sft"], [p["files"][f"step{s}"] for s in args.steps], os.path.join(args.out, name,
            "detect"), steps=args.steps, control_rm=args.control_rm, options=options, batch_size=args.batch_size,
        )  # fmt: skip
        summary["datasets"][name] = {
            "data": p["data"], "prompts": len(p["prompts"]),
            "models": {m: {"feature": sec["feature"], "selection": sec.get("selection"),
                           "csi": {e["step"]: e["csi"] for e in sec["checkpoints"]},
                           "mop": {e["step"]: e["mop"] for e in sec["checkpoints"]}}
                       for m, sec in report["models"].items()},
        }  # fmt: skip
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for name, entry in summary["datasets"].items():
        for model, m in entry["models"].items():
            print(f"{name:10s} {model:12s} CSI by step " + ", ".join(f"{s}: {v:.2f}" for s, v in m["csi"].items()))
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    return summary


def smoke(out: str) -> dict:
    """The study on a tiny random SFT checkpoint, a perturbed copy as the 'RLHF' checkpoint, a tiny InfoRM and a
    tiny standard RM, over the four 5-row fixtures."""
    import jax
    from flax import nnx

    from inform_jax.data.tokenizer import load_tokenizer
    from inform_jax.models import from_pretrained, save_pretrained
    from inform_jax.models.reward_model import HeadConfig, RewardModel, save_reward_model

    texts = [t for path in SMOKE_DATA.values() for t in _texts(path)]
    sft = tiny_checkpoint(os.path.join(out, "sft"), "pythia-1.4b", texts)
    tokenizer = load_tokenizer(sft)
    policy = from_pretrained(sft)
    graphdef, state = nnx.split(policy)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    moved = [x + 0.5 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    noise = jax.tree.unflatten(treedef, moved)
    rlhf = os.path.join(out, "rlhf")
    save_pretrained(nnx.merge(graphdef, noise), rlhf)
    tokenizer.save_pretrained(rlhf)
    folders = {}
    for name, kind in (("inform-rm", "ib"), ("standard-rm", "scalar")):
        model = RewardModel(from_pretrained(sft, lm_head=False), HeadConfig(kind=kind, latent_dim=8), rngs=nnx.Rngs(3))
        folders[name] = os.path.join(out, name)
        save_reward_model(model, folders[name])
        tokenizer.save_pretrained(folders[name])
    args = parse_args([
        "--rm", folders["inform-rm"], "--control-rm", folders["standard-rm"], "--sft", sft, "--rlhf", sft, rlhf,
        "--steps", "0", "1", "--data", *(f"{k}={v}" for k, v in SMOKE_DATA.items()), "--out", os.path.join(out, "csi"),
        "--max-new-tokens", "6", "--batch-size", "4", "--k", "2", "--plot-projection", "pca",
    ])  # fmt: skip
    return run_study(args)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny end-to-end run (no other argument needed)")
    parser.add_argument("--rm", help="InfoRM folder (its IB latent space)")
    parser.add_argument("--control-rm", help="a standard RM folder: the same analysis in its hidden space")
    parser.add_argument("--sft", help="SFT policy folder")
    parser.add_argument("--rlhf", nargs="+", default=[], help="RLHF policy checkpoint folders, in training order")
    parser.add_argument("--steps", type=int, nargs="+", default=[], help="the RL step of each --rlhf checkpoint")
    parser.add_argument("--data", nargs="+", default=[], metavar="DATASET=PATH",
                        help="alpacafarm=FILE.json falseqa=FILE.csv flan=FILE.jsonl helpsteer=FILE.jsonl")  # fmt: skip
    parser.add_argument("--out", default="runs/csi-detection")
    parser.add_argument("--num-prompts", type=int, default=0, help="first N distinct prompts per dataset (0 = all)")
    parser.add_argument("--template", default="alpaca", choices=["alpaca", "raw"],
                        help="FalseQA / Flan / HelpSteer questions as Alpaca instructions or raw")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--k", type=int, help="k-means k (default: best silhouette in --k-range)")
    parser.add_argument("--k-rule", default="silhouette", choices=["silhouette", "sqrt"])
    parser.add_argument("--k-range", type=int, nargs=2, default=[2, 10])
    parser.add_argument("--plot-projection", default="tsne", choices=["tsne", "pca"], help="2-D view in the plots")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_required(parser, args, ("rm", "sft", "rlhf", "data"))
    args.steps = args.steps or list(range(len(args.rlhf)))
    return args


def main(argv=None) -> int:
    return study_main(parse_args(argv), run_study, smoke, "runs/csi-detection")


if __name__ == "__main__":
    sys.exit(main())
