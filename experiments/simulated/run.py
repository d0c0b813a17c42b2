"""Simulated RLHF at real scale (the InfoRM paper's Fig. 4 setting): a gold reward model labels the preference
pairs, a fraction of the labels is flipped (25% in the paper), proxy reward models are trained on the noisy labels,
PPO optimizes each proxy (plus the standard RM with a KL penalty), and the gold reward model scores every rollout.
The result is gold and proxy reward against KL(policy || SFT) per method.

    # the gold RM: any reward-model folder, e.g. a standard RM trained on all human labels with a larger model
    inform-jax train-rm --config experiments/rm/llama3-8b-alpacafarm-inform.yaml --method standard \\
        --output-dir runs/gold-rm
    python experiments/simulated/run.py --gold-rm runs/gold-rm/final --sft /data/models/pythia-1.4b-sft \\
        --pairs /data/alpacafarm/train.jsonl --prompts /data/alpacafarm/prompts.jsonl --out runs/simulated
    python experiments/simulated/run.py --smoke      # end to end on tiny random checkpoints and 5-row fixtures

Steps (each skipped when its output exists, so a killed study resumes; each PPO run also resumes from its own
checkpoints): relabel -> train-rm per method -> ppo per run -> summary.json and gold-proxy-vs-kl.png.
The pairs' own labels are ignored (only the prompt and the two responses are used); their agreement with the
gold model is reported. The held-out pairs keep clean gold labels, so the proxies' accuracy is against gold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from experiments.smoke import _texts, check_required, dataset_files, study_main, tiny_checkpoint  # noqa: E402

HERE = os.path.join(ROOT, "experiments", "simulated")
RM_CONFIG = os.path.join(HERE, "pythia-1.4b-proxy-rm.yaml")
PPO_CONFIG = os.path.join(HERE, "pythia-1.4b-ppo.yaml")
# run name -> (proxy reward model method, PPO overrides)
RUNS = {
    "Standard RM": ("standard", {}),
    "Standard RM w/ KL": ("standard", {"kl.coef": "KL"}),
    "Ensemble RM": ("ensemble", {}),
    "WARM": ("warm", {}),
    "InfoRM": ("inform", {}),
}


def relabel(gold_scores, pairs, *, noise: float, seed: int) -> tuple[list[dict], dict]:
    """Rows {"prompt", "chosen", "rejected", "gold_margin", "flipped"}: the gold-preferred response chosen, then
    the order flipped for a ``noise`` fraction of the rows (drawn with ``seed``). ``gold_scores(prompts,
    responses) -> [N]``. Returns (rows, report with the original labels' agreement with gold)."""
    if not 0.0 <= noise < 0.5:
        raise ValueError(f"noise must be in [0, 0.5), got {noise}")
    prompts = [p.prompt for p in pairs]
    first = np.asarray(gold_scores(prompts, [p.chosen for p in pairs]), np.float64)
    second = np.asarray(gold_scores(prompts, [p.rejected for p in pairs]), np.float64)
    flips = np.random.default_rng(seed).random(len(pairs)) < noise
    rows = []
    for pair, a, b, flip in zip(pairs, first, second, flips, strict=True):
        better, worse = (pair.chosen, pair.rejected) if a >= b else (pair.rejected, pair.chosen)
        chosen, rejected = (worse, better) if flip else (better, worse)
        rows.append({"prompt": pair.prompt, "chosen": chosen, "rejected": rejected, "gold_margin": float(abs(a - b)),
                     "flipped": bool(flip)})  # fmt: skip
    report = {
        "pairs": len(rows), "noise": noise, "flipped": int(flips.sum()),
        "original_labels_agree_with_gold": float(np.mean(first >= second)), "gold_ties": int(np.sum(first == second)),
    }  # fmt: skip
    return rows, report


def _write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def _cli(args: list[str]) -> None:
    from inform_jax.cli import main

    code = main(args)
    if code:
        raise SystemExit(f"inform-jax {' '.join(args)} exited with {code}")


def _sets(overrides: dict) -> list[str]:
    return [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]


def run_study(args: argparse.Namespace, *, rm_overrides: dict | None = None, ppo_overrides: dict | None = None) -> dict:
    from inform_jax.data.preference import load_preferences
    from inform_jax.eval.judges import RewardModelJudge
    from inform_jax.lab.config import slug
    from inform_jax.lab.figures import gold_and_proxy_vs_rollout_kl
    from inform_jax.lab.report import overoptimization
    from inform_jax.train.metrics_log import read_metrics

    os.makedirs(args.out, exist_ok=True)
    train_path, eval_path = os.path.join(args.out, "labels_train.jsonl"), os.path.join(args.out, "labels_eval.jsonl")
    report_path = os.path.join(args.out, "labels.json")
    if not os.path.exists(report_path):
        pairs, load_report = load_preferences(args.pairs)
        print(load_report)
        judge = RewardModelJudge(args.gold_rm, max_length_cap=args.gold_max_length)
        rows, report = relabel(judge.scores, pairs, noise=args.noise, seed=args.seed)
        held = min(args.eval_pairs, len(rows) // 5)
        train_rows = rows[: len(rows) - held] if held else rows
        eval_rows = rows[len(rows) - held :] if held else rows
        # held-out pairs keep the clean gold label: the proxies are evaluated against gold
        eval_rows = [dict(r, chosen=r["rejected"], rejected=r["chosen"]) if r["flipped"] else r for r in eval_rows]
        _write_jsonl(train_path, train_rows)
        _write_jsonl(eval_path, eval_rows)
        with open(report_path, "w") as f:
            json.dump({**report, "train": len(train_rows), "eval": len(eval_rows)}, f, indent=2)
        print("relabeled:", report)

    names = [name for name in RUNS if RUNS[name][0] in args.methods]
    for method in dict.fromkeys(RUNS[name][0] for name in names):
        folder = os.path.join(args.out, f"rm-{method}")
        if not os.path.exists(os.path.join(folder, "final", "reward_config.json")):
            overrides = {"model.path": args.sft, "data.train": train_path, "data.eval": eval_path,
                         **(rm_overrides or {})}  # fmt: skip
            _cli(
                ["train-rm", "--config", args.rm_config, "--method", method, "--output-dir", folder, *_sets(overrides)]
            )

    results = {}
    for name in names:
        method, extra = RUNS[name]
        folder = os.path.join(args.out, "ppo-" + slug(name))
        if not os.path.exists(os.path.join(folder, "final", "config.json")):
            overrides = {
                "policy.path": args.sft, "reward.path": os.path.join(args.out, f"rm-{method}", "final"),
                "reward.gold_path": args.gold_rm, "data.prompts": args.prompts, "train.output_dir": folder,
                **{k: (args.kl_coef if v == "KL" else v) for k, v in extra.items()}, **(ppo_overrides or {}),
            }  # fmt: skip
            _cli(["ppo", "--config", args.ppo_config, *_sets(overrides)])
        metrics = read_metrics(os.path.join(folder, "metrics.jsonl"))
        results[name] = {"metrics": metrics, "summary": overoptimization(metrics, window=max(1, len(metrics) // 8))}
    figure = gold_and_proxy_vs_rollout_kl(os.path.join(args.out, "gold-proxy-vs-kl.png"), results)
    with open(report_path) as f:
        labels = json.load(f)
    summary = {"labels": labels, "runs": {k: v["summary"] for k, v in results.items()}, "figure": figure,
               "command": " ".join(sys.argv)}  # fmt: skip
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for name, s in summary["runs"].items():
        print(f"{name:18s} gold {s['gold_start']:.3f} -> peak {s['gold_peak']:.3f} (KL {s['kl_at_gold_peak']:.2f}) "
              f"-> final {s['gold_final']:.3f} (KL {s['kl_final']:.2f}); "
              f"proxy {s['proxy_start']:.3f} -> {s['proxy_final']:.3f}")  # fmt: skip
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    return summary


def smoke(out: str) -> dict:
    """The whole study on tiny random Pythia-family checkpoints and the 5-row AlpacaFarm fixtures."""
    from flax import nnx

    from inform_jax.data.tokenizer import load_tokenizer
    from inform_jax.models import from_pretrained
    from inform_jax.models.reward_model import HeadConfig, RewardModel, save_reward_model

    files = dataset_files("alpacafarm", out)
    sft = tiny_checkpoint(os.path.join(out, "sft"), "pythia-1.4b", _texts(files["pairs"]))
    gold_dir = os.path.join(out, "gold-rm")
    gold = RewardModel(from_pretrained(sft, lm_head=False), HeadConfig(kind="scalar"), rngs=nnx.Rngs(7))
    save_reward_model(gold, gold_dir)
    load_tokenizer(sft).save_pretrained(gold_dir)
    args = parse_args([
        "--gold-rm", gold_dir, "--sft", sft, "--pairs", files["pairs"], "--prompts", files["prompts"],
        "--out", os.path.join(out, "study"), "--methods", "standard", "inform", "--eval-pairs", "1",
    ])  # fmt: skip
    rm = {"model.dtype": "float32", "model.remat": "false", "data.max_length": 96, "train.batch_size": 2,
          "train.max_steps": 2, "train.eval_every": 2, "train.eval_batch_size": 2, "train.progress": "false",
          "head.latent_dim": 8, "mesh.fsdp": 1}  # fmt: skip
    ppo = {"policy.dtype": "float32", "policy.remat": "false", "data.max_prompt_length": 64, "rollout.batch_size": 2,
           "rollout.max_new_tokens": 4, "ppo.minibatches": 1, "train.iterations": 2, "train.progress": "false",
           "mesh.fsdp": 1}  # fmt: skip
    return run_study(args, rm_overrides=rm, ppo_overrides=ppo)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny end-to-end run (no other argument needed)")
    parser.add_argument("--gold-rm", help="gold reward model folder (labels the pairs, scores the rollouts)")
    parser.add_argument("--sft", help="SFT policy folder (the proxies' initialization and PPO's start)")
    parser.add_argument("--pairs", help="preference pairs to relabel (prompt/chosen/rejected, hh or messages)")
    parser.add_argument("--prompts", help="PPO prompt file (column prompt)")
    parser.add_argument("--out", default="runs/simulated")
    parser.add_argument("--noise", type=float, default=0.25, help="fraction of flipped labels (paper: 0.25)")
    parser.add_argument("--eval-pairs", type=int, default=500, help="held-out pairs with clean gold labels")
    parser.add_argument("--methods", nargs="+", default=["standard", "ensemble", "warm", "inform"],
                        help="proxy methods; 'standard' also runs Standard RM w/ KL")  # fmt: skip
    parser.add_argument("--kl-coef", type=float, default=0.05, help="the Standard RM w/ KL run's coefficient")
    parser.add_argument("--rm-config", default=RM_CONFIG)
    parser.add_argument("--ppo-config", default=PPO_CONFIG)
    parser.add_argument("--gold-max-length", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_required(parser, args, ("gold_rm", "sft", "pairs", "prompts"))
    return args


def main(argv=None) -> int:
    return study_main(parse_args(argv), run_study, smoke, "runs/simulated")


if __name__ == "__main__":
    sys.exit(main())
