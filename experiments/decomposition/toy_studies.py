"""Reward-decomposition toy studies (Mao et al. 2025) on the synthetic world: plain Bradley-Terry, RRM and
prioritized training (method dir) on the length-biased and the adversarial-prompt sets, several seeds.

Each run trains a tiny reward model from random initialization on the biased training set (the response-only
rule fits `--bias` of it) and reports held-out accuracy on the debiased set (bias 0.5), split into the pairs the
response-only rule gets right (aligned) and wrong (adversarial), and how much of the training pairs' reward gap
the responses alone carry (the prompt-free share, mean |dr2| / (mean |dr1| + mean |dr2|), which the paper's Figs.
3-4 say prioritized training lowers). Every method trains at each budget of `--steps`, each a run with its own
schedule: at 19 epochs every method but RRM has learned the adversarial set's prompt rule, so the short budgets
(1 and 2 epochs; one epoch is the usual reward-model practice) are where methods could differ in accuracy. The
quadrant plots show (dr1, dr2) of the training pairs under the plain BT model (before) and the prioritized model
(after), at the shortest and the longest budget, for the first seed.

    python experiments/decomposition/toy_studies.py                 # 3 seeds, both sets, 3 budgets: ~19 min on 2 cores
    python experiments/decomposition/toy_studies.py --smoke         # one tiny run per method, seconds

Writes results.json, RESULTS.md and quadrant PNGs under --out (default experiments/decomposition/results); the
generated data and training runs go to --work (default a temporary folder).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np

from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.eval.decomposition import PairTokens, decompose, summarize
from inform_jax.eval.decomposition_report import plot_quadrants
from inform_jax.eval.rm_eval import pair_scores
from inform_jax.models import make_mesh
from inform_jax.train.config import config_from_dict
from inform_jax.train.rm.data import prepare_pairs
from inform_jax.train.rm.trainer import RewardModelTrainer, method_pair_transform
from inform_jax.world.decomposition import TOY_SETS, write_toy_sets
from inform_jax.world.world import SyntheticWorld

# study name -> (train-rm method, decomposition overrides). The dir variants compare the estimators and weights.
METHODS = {
    "standard": ("standard", {}),
    "rrm": ("rrm", {}),
    "dir": ("dir", {}),
    "dir-logit": ("dir", {"estimator": "logit"}),
    "dir-reward-weights": ("dir", {"weights": "reward"}),
}
BATCH_SIZE = 32
N_TRAIN, N_TEST = 1024, 256
COLOR_LABELS = {"length": ("|y_w| > |y_l|", "|y_w| <= |y_l|"), "adversarial": ("adversarial", "bias-aligned"),
                "shifted_count": ("adversarial", "bias-aligned")}  # fmt: skip
DEFAULT_SETS = ("length", "adversarial")  # the shifted-count set learns slowly: run it at longer --steps


def run_config(name: str, files: dict, kind: str, seed: int, steps: int, out: str, smoke: bool) -> dict:
    method, overrides = METHODS[name]
    model = dict(hidden_size=32 if smoke else 64, intermediate_size=64 if smoke else 128, num_layers=2, num_heads=4,
                 num_kv_heads=4, vocab_size=len(load_tokenizer(files["tokenizer"])))  # fmt: skip
    return dict(
        method=method,
        model=dict(config=model, dtype="float32", scan_layers=True),
        data=dict(
            train=files[f"{kind}_train.jsonl"],
            eval=files[f"{kind}_test_debiased.jsonl"],
            tokenizer=files["tokenizer"],
            max_length=24,
        ),  # fmt: skip
        decomposition=dict(
            num_prompts=4 if smoke else 8, warmup_steps=steps // 3, refresh_every=max(steps // 6, 1), **overrides
        ),  # fmt: skip
        optim=dict(lr=1e-3, warmup_ratio=0.05),
        train=dict(
            batch_size=BATCH_SIZE,
            max_steps=steps,
            eval_every=10**6,
            save_every=10**6,
            log_every=10**6,
            seed=seed,
            output_dir=out,
            progress=False,
        ),  # fmt: skip
    )


def train_one(method, files, kind, seed, steps, out, smoke, log):
    config = config_from_dict(run_config(method, files, kind, seed, steps, out, smoke))
    tokenizer = load_tokenizer(files["tokenizer"])
    quiet = lambda *_: None  # noqa: E731
    train = prepare_pairs(config.data.train, tokenizer, config.data, transform=method_pair_transform(config), log=quiet)
    held_out, pairs = prepare_pairs(config.data.eval, tokenizer, config.data, log=quiet, return_pairs=True)
    trainer = RewardModelTrainer(
        config, train, held_out, mesh=make_mesh(devices=jax.devices()[:1]), pad_id=tokenizer.pad_token_id or 0
    )
    start = time.perf_counter()
    model = trainer.fit()
    chosen, rejected = pair_scores(model, held_out)
    correct = chosen > rejected
    adversarial = np.array([bool(p.extra["adversarial"]) for p in pairs])
    result = {
        "method": method, "set": kind, "seed": seed, "steps": steps, "config": METHODS[method],
        "debiased_accuracy": float(correct.mean()),
        "aligned_accuracy": float(correct[~adversarial].mean()),
        "adversarial_accuracy": float(correct[adversarial].mean()),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    log(f"  {kind:11s} {method:8s} seed {seed}: debiased {result['debiased_accuracy']:.3f} "
        f"(aligned {result['aligned_accuracy']:.3f}, adversarial {result['adversarial_accuracy']:.3f}) "
        f"in {result['seconds']:.0f} s")  # fmt: skip
    return model, result, tokenizer


def training_decomposition(model, files, kind, tokenizer):
    """(dr1, dr2) [N] of every training pair under ``model`` (8 other prompts each), and the pairs' red flags
    [N] for the quadrant plot (length set: the longer response won; adversarial set: an adversarial pair)."""
    arrays, pairs = prepare_pairs(
        files[f"{kind}_train.jsonl"], tokenizer, config_from_dict({"data": {"max_length": 24}}).data,
        log=lambda *_: None, return_pairs=True,
    )  # fmt: skip
    parts = decompose(model, PairTokens(arrays, tokenizer.pad_token_id or 0), num_prompts=8)
    if kind == "length":
        red = arrays["response_lengths"][:, 0] > arrays["response_lengths"][:, 1]
    else:
        red = np.array([bool(p.extra["adversarial"]) for p in pairs])
    return parts, red


def prompt_free_share(parts) -> float:
    """mean |dr2| / (mean |dr1| + mean |dr2|) over the training pairs: the share of the reward gap that the
    responses alone carry. The paper's Figs. 3-4 argue that prioritized training moves the pairs toward the dr1
    axis, i.e. lowers this share."""
    dr1, dr2 = np.abs(np.asarray(parts["dr1"])).mean(), np.abs(np.asarray(parts["dr2"])).mean()
    return float(dr2 / (dr1 + dr2)) if dr1 + dr2 > 0 else 0.0


def write_finished_run(run_dir: str, key: dict, record: dict, parts: dict, red: np.ndarray) -> None:
    """Keep a finished run in ``run_dir`` so that a rerun (another process of the lab's ``--jobs``, or a run that
    was stopped) reads it back instead of training it again: ``run.json`` (what made it and its record) and
    ``parts.npz`` (dr1, dr2 [N] of the training pairs and their red flags [N], for the quadrant plot). The json is
    written last, by rename, so a run killed midway leaves no record."""
    os.makedirs(run_dir, exist_ok=True)
    np.savez(os.path.join(run_dir, "parts.npz"), dr1=np.asarray(parts["dr1"]), dr2=np.asarray(parts["dr2"]), red=red)
    partial = os.path.join(run_dir, "run.json.partial")
    with open(partial, "w") as f:
        json.dump({"key": key, "record": record}, f)
    os.replace(partial, os.path.join(run_dir, "run.json"))


def read_finished_run(run_dir: str, key: dict) -> tuple[dict, dict, np.ndarray] | None:
    """(record, parts, red) of the run kept in ``run_dir`` by ``write_finished_run``, or None when there is none
    or it was made with another key (config, bias or set sizes): such a run trains again."""
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        kept = json.load(f)
    if kept["key"] != json.loads(json.dumps(key)):  # compared as stored (tuples become lists)
        return None
    with np.load(os.path.join(run_dir, "parts.npz")) as arrays:
        return kept["record"], {"dr1": arrays["dr1"], "dr2": arrays["dr2"]}, arrays["red"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[32, 64, 600],
        help="training budgets, each a separate run per method (32 steps = 1 epoch of the train set)",
    )
    parser.add_argument("--bias", type=float, default=0.85, help="share of training pairs the response-only rule fits")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "latest"))
    parser.add_argument("--work", help="folder for the generated data and training runs (default: a temp folder)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--sets", nargs="+", choices=list(TOY_SETS), default=list(DEFAULT_SETS))
    parser.add_argument("--smoke", action="store_true", help="one seed, tiny sets and models, few steps")
    args = parser.parse_args(argv)
    if min(args.steps) < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    work = args.work or tempfile.mkdtemp(prefix="toy-studies-")
    methods = {k: v for k, v in METHODS.items() if k in args.methods}
    n_train, n_test = N_TRAIN, N_TEST
    if args.smoke:  # end to end on every set with each method kind once (the dir variants share dir's path)
        args.seeds, args.steps, n_train, n_test = args.seeds[:1], [6, 12], 64, 32
        methods = {k: v for k, v in methods.items() if k in ("standard", "rrm", "dir")}
    budgets = sorted(set(args.steps))
    plotted = sorted({budgets[0], budgets[-1]})
    os.makedirs(args.out, exist_ok=True)
    world = SyntheticWorld()
    runs, figures, started = [], {}, time.perf_counter()
    for seed in args.seeds:
        files = write_toy_sets(
            world, os.path.join(work, "data", f"seed{seed}"), n_train=n_train, n_test=n_test, bias=args.bias, seed=seed
        )  # fmt: skip
        for kind in args.sets:
            for steps in budgets:
                for method in methods:
                    run_dir = os.path.join(work, "runs", f"{kind}-{method}-{steps}steps-seed{seed}")
                    # what makes the run: its training config and the data it was generated with
                    key = {"config": run_config(method, files, kind, seed, steps, run_dir, args.smoke),
                           "bias": args.bias, "n_train": n_train, "n_test": n_test}  # fmt: skip
                    done = read_finished_run(run_dir, key)
                    if done is None:
                        model, result, tokenizer = train_one(method, files, kind, seed, steps, run_dir, args.smoke,
                                                             print)  # fmt: skip
                        parts, red = training_decomposition(model, files, kind, tokenizer)
                        summary = {**summarize(parts), "prompt_free_share": prompt_free_share(parts)}
                        record = {**result, "epochs": steps * BATCH_SIZE / n_train, "train_decomposition": summary}
                        write_finished_run(run_dir, key, record, parts, red)
                    else:
                        record, parts, red = done
                        print(f"  {kind:11s} {method:8s} seed {seed}: read back from {run_dir}")
                    runs.append(record)
                    stage = {"standard": "before", "dir": "after"}.get(method)
                    if seed != args.seeds[0] or steps not in plotted or stage is None:
                        continue
                    path = os.path.join(args.out, f"quadrants-{kind}-{stage}-{steps}steps.png")
                    plot_quadrants(
                        path,
                        parts["dr1"],
                        parts["dr2"],
                        red,
                        red_label=COLOR_LABELS[kind][0],
                        other_label=COLOR_LABELS[kind][1],
                        title=f"{kind} set, {stage} prioritized training ({method}, {steps} steps, seed {seed})",
                    )
                    figures[f"{kind}-{stage}-{steps}steps"] = {"figure": os.path.basename(path), "steps": steps,
                                                                **record["train_decomposition"]}  # fmt: skip
    table = {}
    for kind in args.sets:
        for steps in budgets:
            for method in methods:
                rows = [r for r in runs if (r["set"], r["steps"], r["method"]) == (kind, steps, method)]
                accs, adv = [r["debiased_accuracy"] for r in rows], [r["adversarial_accuracy"] for r in rows]
                share = [r["train_decomposition"]["prompt_free_share"] for r in rows]
                table[f"{kind}/{method}/{steps}"] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)),
                                                     "adversarial_mean": float(np.mean(adv)),
                                                     "prompt_free_share_mean": float(np.mean(share)),
                                                     "runs": accs}  # fmt: skip
    command = "python experiments/decomposition/toy_studies.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "command": command.strip(), "seconds": time.perf_counter() - started, "bias": args.bias,
        "steps": budgets, "n_train": n_train, "batch_size": BATCH_SIZE, "seeds": args.seeds, "summary": table,
        "quadrants": figures, "runs": runs,
    }  # fmt: skip
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"# Reward-decomposition toy studies ({result['date']}, {result['machine']})", "",
             f"`{result['command']}`: {len(args.seeds)} seed(s), budgets {budgets} steps (batch {BATCH_SIZE}, "
             f"{n_train} training pairs), training bias {args.bias}; held-out accuracy on debiased pairs (bias 0.5), "
             "mean +- std over seeds (adversarial: the pairs a response-only rule gets wrong; prompt-free share: "
             "mean |dr2| / (mean |dr1| + mean |dr2|) over the training pairs).", "",
             "| set | steps | method | debiased accuracy | adversarial-pair accuracy | prompt-free share |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for key, row in table.items():
        kind, method, steps = key.split("/")
        lines.append(
            f"| {kind} | {steps} | {method} | {row['mean']:.3f} +- {row['std']:.3f} | {row['adversarial_mean']:.3f} | "
            f"{row['prompt_free_share_mean']:.3f} |"
        )
    with open(os.path.join(args.out, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
