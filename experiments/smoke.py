"""Smoke runs of the real-scale experiment configs: each config end to end on a tiny random checkpoint of the same
architecture family and a 5-row fixture in the dataset's real format (tests/fixtures/), in seconds.

    python experiments/smoke.py                                   # every config under experiments/rm and /ppo
    python experiments/smoke.py experiments/rm/llama3-8b-hh-inform.yaml

Only paths, sizes and step counts are overridden; the method, losses, optimizer and data format are the
config's own, so a smoke run exercises the code path the real run takes.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: `experiments` importable as a package
    sys.path.insert(0, ROOT)
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
HH_PAIRS = os.path.join(FIXTURES, "hh_rlhf.jsonl")
HH_PROMPTS = os.path.join(FIXTURES, "hh_prompts.jsonl")
ALPACAFARM = os.path.join(FIXTURES, "alpacafarm_human_preference.json")
ALPACAFARM_EVAL = os.path.join(FIXTURES, "alpacafarm_eval.json")
TLDR = os.path.join(FIXTURES, "tldr_comparisons.jsonl")
REWARDBENCH = os.path.join(FIXTURES, "rewardbench.jsonl")


def configs() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "experiments", "rm", "*.yaml"))
                  + glob.glob(os.path.join(ROOT, "experiments", "ppo", "*.yaml")))  # fmt: skip


def _texts(path: str) -> list[str]:
    from inform_jax.data.formats import read_records

    return [str(v) for row in read_records(path) for v in row.values()]


def dataset_files(dataset: str, work: str) -> dict[str, str]:
    """The 5-row fixtures of ``dataset`` (hh | alpacafarm | tldr) converted as the real files are:
    {"pairs": prompt/chosen/rejected or HH file, "prompts": prompt file}."""
    from experiments.prompts import write_prompts
    from inform_jax.data.formats import convert_pairs, read_dataset_prompts

    if dataset == "hh":
        return {"pairs": HH_PAIRS, "prompts": HH_PROMPTS}
    source, prompt_source = {"alpacafarm": (ALPACAFARM, ALPACAFARM_EVAL), "tldr": (TLDR, TLDR)}[dataset]
    pairs = os.path.join(work, f"{dataset}-pairs.jsonl")
    convert_pairs(dataset, source, pairs)
    prompts = write_prompts(read_dataset_prompts(dataset, prompt_source)[0], os.path.join(work, f"{dataset}.jsonl"))
    return {"pairs": pairs, "prompts": prompts}


def synthetic_world(work: str) -> tuple[dict[str, str], list[str]]:
    """The synthetic world's files at 5 rows each, and its vocabulary."""
    from inform_jax.world import SyntheticWorld

    files = SyntheticWorld().write(os.path.join(work, "world"), n_train=5, n_test=5, n_sft=5, n_prompts_train=5,
                                   n_prompts_test=5)  # fmt: skip
    with open(files["world.json"]) as f:
        return files, json.load(f)["vocabulary"]


def dataset_of(config_path: str) -> str:
    """The dataset a config's file name names (e.g. pythia-1.4b-tldr-inform.yaml -> tldr)."""
    parts = os.path.basename(config_path).removesuffix(".yaml").split("-")
    found = [d for d in ("hh", "alpacafarm", "tldr", "synthetic") if d in parts]
    if len(found) != 1:
        raise ValueError(f"{config_path}: the file name should name one dataset (hh, alpacafarm, tldr, synthetic)")
    return found[0]


def tiny_checkpoint(folder: str, preset: str | None, texts: list[str]) -> str:
    """A random 2-layer model of the preset's architecture family with a word tokenizer over ``texts``."""
    from flax import nnx

    from inform_jax.data.testing import make_word_tokenizer
    from inform_jax.data.tokenizer import load_tokenizer
    from inform_jax.models import CausalLM, DecoderConfig, save_pretrained
    from inform_jax.models.presets import preset_config

    make_word_tokenizer(folder, texts, chat_template=False)
    tokenizer = load_tokenizer(folder)
    base = preset_config(preset) if preset else DecoderConfig()
    config = dataclasses.replace(
        base, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
        num_kv_heads=2 if base.num_kv_heads < base.num_heads else 4, head_dim=None,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    save_pretrained(CausalLM(config, rngs=nnx.Rngs(0)), folder)
    tokenizer.save_pretrained(folder)
    return folder


def _run(command: str, config_path: str, overrides: dict) -> int:
    """`inform-jax COMMAND --config CONFIG --set key=value ...`, in this process; returns the exit code."""
    from inform_jax.cli import main

    args = [command, "--config", config_path]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return main(args)


def smoke_rm(config_path: str, work: str) -> dict:
    """train-rm on the config's dataset fixture; a decomposition config (method dir / rrm) also runs its
    follow-ups, evaluate-rm on the RewardBench fixture and decompose."""
    from inform_jax.cli import main

    with open(config_path) as f:
        raw = yaml.safe_load(f)
    if dataset_of(config_path) == "synthetic":
        files, vocabulary = synthetic_world(work)
        data, texts = files["prefs_train.jsonl"], vocabulary + _texts(REWARDBENCH)
    else:
        data = dataset_files(dataset_of(config_path), work)["pairs"]
        texts = _texts(data) + _texts(REWARDBENCH)
    model = tiny_checkpoint(os.path.join(work, "model"), raw["model"].get("preset"), texts)
    out = os.path.join(work, "run")
    overrides = {
        "model.path": model, "model.dtype": "float32", "model.remat": "false", "data.train": data, "data.eval": data,
        "data.tokenizer": model, "data.max_length": 96, "train.batch_size": 4, "train.max_steps": 2,
        "train.eval_every": 2, "train.eval_batch_size": 4, "train.save_every": 1000, "train.progress": "false",
        "train.output_dir": out, "head.latent_dim": 8, "mesh.fsdp": 1, "decomposition.num_prompts": 2,
        "decomposition.warmup_steps": 1, "decomposition.refresh_every": 1,
    }  # fmt: skip
    code = _run("train-rm", config_path, overrides)
    final = os.path.join(out, "final")
    if code == 0 and raw.get("method") in ("dir", "inform+dir", "rrm"):
        code = main(["evaluate-rm", "--rm", final, "--data", REWARDBENCH, "--max-length", "96",
                     "--out", os.path.join(work, "rewardbench.json")])  # fmt: skip
        code = code or main(["decompose", "--rm", final, "--data", data, "--out", os.path.join(work, "decompose"),
                             "--num-prompts", "2", "--max-length", "96"])  # fmt: skip
    return {"config": config_path, "code": code, "final": final}


def smoke_ppo(config_path: str, work: str) -> dict:
    from flax import nnx

    from inform_jax.models import from_pretrained
    from inform_jax.models.reward_model import HeadConfig, RewardModel, save_reward_model

    with open(config_path) as f:
        raw = yaml.safe_load(f)
    dataset = dataset_of(config_path)
    if dataset == "synthetic":
        files, texts = synthetic_world(work)
        prompts = files["prompts_train.jsonl"]
        model = tiny_checkpoint(os.path.join(work, "policy"), None, texts)
    else:
        files = dataset_files(dataset, work)
        prompts = files["prompts"]
        model = tiny_checkpoint(os.path.join(work, "policy"), raw["policy"].get("preset"), _texts(files["pairs"]))
    backbone = from_pretrained(model, lm_head=False)
    reward = RewardModel(backbone, HeadConfig(kind="ib", latent_dim=8), rngs=nnx.Rngs(1))
    save_reward_model(reward, os.path.join(work, "rm"))
    out = os.path.join(work, "run")
    overrides = {
        "policy.path": model, "policy.dtype": "float32", "policy.remat": "false",
        "reward.path": os.path.join(work, "rm"), "data.prompts": prompts, "data.tokenizer": model,
        "data.max_prompt_length": 32, "rollout.batch_size": 4, "rollout.max_new_tokens": 4, "ppo.minibatches": 1,
        "train.iterations": 1, "train.progress": "false", "train.output_dir": out, "mesh.fsdp": 1,
    }  # fmt: skip
    code = _run("ppo", config_path, overrides)
    return {"config": config_path, "code": code, "final": os.path.join(out, "final")}


def smoke(config_path: str, work: str | None = None) -> dict:
    """Run one config's smoke mode in ``work`` (default: a temp folder); returns its exit code and output."""
    kind = os.path.basename(os.path.dirname(os.path.abspath(config_path)))
    runs = {"rm": smoke_rm, "ppo": smoke_ppo}
    if kind not in runs:  # before any folder is made: a wrong path leaves nothing behind
        raise ValueError(f"{config_path}: no smoke mode for experiments/{kind}")
    return runs[kind](config_path, work or tempfile.mkdtemp(prefix="smoke-"))


def check_required(parser, args, names: tuple[str, ...]) -> None:
    """A study script's options that are required unless --smoke."""
    missing = [f"--{k.replace('_', '-')}" for k in names if not getattr(args, k)]
    if missing and not args.smoke:
        parser.error(f"missing {', '.join(missing)} (or use --smoke)")


def study_main(args, run, smoke_run, default_out: str) -> int:
    """Run a study script: ``smoke_run(folder)`` with --smoke (a temp folder unless --out is given), else
    ``run(args)``."""
    if args.smoke:
        smoke_run(args.out if args.out != default_out else tempfile.mkdtemp(prefix="study-smoke-"))
    else:
        run(args)
    return 0


def main(argv=None) -> int:
    paths = (argv if argv is not None else sys.argv[1:]) or configs()
    failed = []
    for path in paths:
        result = smoke(path)
        print(f"{'ok' if result['code'] == 0 else 'FAILED'}  {os.path.relpath(path, ROOT)}")
        if result["code"] != 0:
            failed.append(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
