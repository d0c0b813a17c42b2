"""TPU-pod readiness without a TPU: the InfoRM train step and the PPO update compiled ahead of time for TPU
topologies, per-device memory and the mesh each uses (the planning code of `inform-jax plan`; needs the tpu
extra for libtpu).

    python benchmarks/tpu_plans.py                         # Llama-3-8B and Pythia-6.9B on v4, v5e, v5p, 8 and 64 chips
    python benchmarks/tpu_plans.py --models llama-3-8b --programs inform   # the InfoRM table of docs/performance.md
    python benchmarks/tpu_plans.py --models pythia-6.9b --topologies v5p:2x2x2 --programs ppo --attention auto

Each plan compiles the real program at full depth (bf16 compute, float32 parameters, full remat, scanned layers,
FSDP over every device); nothing is allocated. v4 is planned as megacore, one 32 GiB device a chip, as a v4 slice
runs (`topology_devices`).
- InfoRM step: 64 pairs x 2048 tokens a step (rounded up to a multiple of the device count), AdamW.
- PPO update: one minibatch of 64 rollouts x (1024 prompt + 1024 response) tokens through the actor (with its
  LM head) and an SFT-initialised critic of the same size, both with Adam.
- Attention (`--attention`, each planned): `einsum` is plain XLA (float32 scores over the whole [T, T] square);
  `auto` resolves to the Pallas splash kernel on TPU. The table names the backend each plan ran.
When the TPU compiler refuses a plan for memory, the next one tried keeps the step's batch but halves what
one pass holds: InfoRM with `train.grad_accum` doubled (2, 4, ...), PPO with the minibatch halved (the same
rollout batch in more minibatches), down to one row per device. If none fits with float32 Adam moments, the
same ladder is tried with `optim.moments_dtype=bfloat16` (InfoRM; `--moments`). Every attempt is reported.
Writes benchmarks/results/tpu_plans-<platform>-<date>.{json,md}: every attempt, then a summary of the first
setting that fits for each program, model, topology and attention.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the TPU is only a compile target here
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no TPU is opened: another process may load libtpu too

import jax  # noqa: E402
from _common import save_results  # noqa: E402

from inform_jax.train.backbone import section_config  # noqa: E402
from inform_jax.train.config import config_from_dict  # noqa: E402
from inform_jax.train.plan import (  # noqa: E402
    plan_ppo_update,
    plan_rm_train_step,
    planned_attention,
    topology_devices,
)
from inform_jax.train.ppo.config import PPOConfig  # noqa: E402

TOPOLOGIES = ("v4:2x2x2", "v4:4x4x4", "v5e:2x4", "v5e:8x8", "v5p:2x2x2", "v5p:4x4x4")  # 8 and 64 chips each
MODEL = {"dtype": "bfloat16", "param_dtype": "float32", "scan_layers": True, "remat": "full"}
MESH = {"data": 1, "fsdp": -1, "tensor": 1}


def inform_config(preset: str, batch: int, length: int, grad_accum: int = 1, attention="einsum", moments="float32"):
    return config_from_dict({
        "method": "inform",
        "model": {"preset": preset, **MODEL, "attention_impl": attention},
        "head": {"latent_dim": 128},
        "data": {"max_length": length},
        "optim": {"moments_dtype": moments},
        "train": {"batch_size": batch, "max_steps": 1000, "grad_accum": grad_accum},
        "mesh": MESH,
    })  # fmt: skip


def ppo_config(preset: str, attention="einsum"):
    return config_from_dict({"policy": {"preset": preset, **MODEL, "attention_impl": attention}, "mesh": MESH},
                            cls=PPOConfig)  # fmt: skip


def backend(preset, attention, devices, rows, length, right_padded) -> str:
    """The attention backend a plan runs (also named for attempts the compiler refused)."""
    arch = section_config(inform_config(preset, 1, length, attention=attention).model, preset_if_path_missing=True)
    return planned_attention(arch, devices, rows, length, right_padded=right_padded)


def inform_attempts(preset, devices, args, attention):
    """(label, plan()) pairs in the order tried: grad_accum 1, 2, 4, ... while a micro-batch covers the devices,
    with float32 Adam moments, then (only if none of those fits) the same with bfloat16 moments."""
    n = len(devices)
    batch = -(-args.batch // n) * n  # FSDP shards the batch over every device
    for moments in args.moments:
        accum = 1
        while batch // accum >= n and (batch // accum) % n == 0:
            rows = 2 * batch // accum
            yield (
                {"pairs_per_step": batch, "grad_accum": accum, "rows_per_pass": rows, "moments": moments,
                 "attention": backend(preset, attention, devices, rows, args.length, True)},
                lambda a=accum, m=moments: plan_rm_train_step(
                    inform_config(preset, batch, args.length, a, attention, m), devices
                ),
            )  # fmt: skip
            accum *= 2
        yield None  # the end of one moments dtype's ladder


def ppo_attempts(preset, devices, args, attention):
    """(label, plan()) pairs: the minibatch halved while it covers the devices."""
    n = len(devices)
    minibatch = -(-args.ppo_minibatch // n) * n
    length = args.prompt_len + args.response_len
    while minibatch >= n and minibatch % n == 0:
        yield (
            {"rows_per_pass": minibatch, "attention": backend(preset, attention, devices, minibatch, length, False)},
            lambda m=minibatch: plan_ppo_update(
                ppo_config(preset, attention), devices, minibatch=m, prompt_len=args.prompt_len,
                response_len=args.response_len,
            ),
        )  # fmt: skip
        minibatch //= 2


def plan_until_it_fits(attempts) -> list[dict]:
    """Each attempt's plan or refusal, stopping at the first that fits (a None between attempts marks the end of
    one ladder: the next ladder is tried only if nothing fit)."""
    rows = []
    for attempt in attempts:
        if attempt is None:
            continue
        label, make = attempt
        start = time.perf_counter()
        try:
            plan = make()
        except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a program that cannot fit
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            rows.append({**label, "fits": False, "error": str(e).splitlines()[0][:300]})
            continue
        rows.append({**label, **plan, "compile_s": time.perf_counter() - start})
        if plan["fits"] is not False:
            break
    return rows


def setting_of(p: dict) -> str:
    setting = f"{p['rows_per_pass']} rows / pass" + (f", grad_accum {p['grad_accum']}" if "grad_accum" in p else "")
    return setting + (", bf16 Adam moments" if p.get("moments") == "bfloat16" else "")


def table_row(p: dict) -> str:
    gib = 2**30
    head = f"| {p['program']} | {p['model']} | {p['topology']} | {p['chips']} | {p['attention']} | {setting_of(p)} "
    if "error" in p:
        return f"{head}| fsdp {p['mesh_devices']} | refused by the compiler: {p['error']} | - | no |\n"
    m = p["per_device_bytes"]
    mesh = " x ".join(f"{k} {v}" for k, v in p["mesh"].items() if v > 1) or "1 device"
    hbm = "-" if p["hbm_bytes"] is None else f"{p['hbm_bytes'] / gib:.0f}"
    fits = "yes" if p["fits"] else "no" if p["fits"] is False else "-"
    return (
        f"{head}| {mesh} | {m['arguments'] / gib:.1f} / {m['temporaries'] / gib:.1f} / "
        f"{p['per_device_total_bytes'] / gib:.1f} | {hbm} | {fits} |\n"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["llama-3-8b", "pythia-6.9b"])
    parser.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES))
    parser.add_argument("--programs", nargs="+", default=["inform", "ppo"], choices=["inform", "ppo"])
    parser.add_argument("--batch", type=int, default=64, help="InfoRM: preference pairs per step")
    parser.add_argument("--length", type=int, default=2048, help="InfoRM: tokens per sequence")
    parser.add_argument("--ppo-minibatch", type=int, default=64, help="PPO: rollouts per update")
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--response-len", type=int, default=1024)
    parser.add_argument(
        "--attention",
        nargs="+",
        default=["einsum", "auto"],
        help="model.attention_impl values to plan (einsum: plain XLA; auto: splash on TPU)",
    )
    parser.add_argument(
        "--moments",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16"],
        help="InfoRM: Adam moment dtypes tried in turn, the next only when none fits",
    )
    parser.add_argument("--name", default="tpu_plans", help="results file name: <name>-<platform>-<date>")
    args = parser.parse_args()
    attempts = {"inform": inform_attempts, "ppo": ppo_attempts}
    names = {"inform": "InfoRM step", "ppo": "PPO update"}
    plans = []
    for program in args.programs:
        for preset in args.models:
            for topology in args.topologies:
                devices = topology_devices(topology)
                chips = len({tuple(d.coords) for d in devices}) if hasattr(devices[0], "coords") else len(devices)
                for attention in args.attention:
                    for row in plan_until_it_fits(attempts[program](preset, devices, args, attention)):
                        row = {"program": names[program], "model": preset, "topology": topology, "chips": chips,
                               "mesh_devices": len(devices), "attention_impl": attention, **row}  # fmt: skip
                        plans.append(row)
                        print(table_row(row), end="", flush=True)
    lines = [
        "| program | model | topology | chips | attention | setting | mesh | per-device GiB (args / temps / total) "
        "| device HBM GiB | fits |\n",
        "|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    lines += [table_row(p) for p in plans]
    lines += ["\n", *summary(plans)]
    result = {
        "programs": {
            "inform": f"InfoRM train step (bf16, fp32 AdamW, full remat), {args.batch} pairs x {args.length} tokens",
            "ppo": f"PPO minibatch update (actor + critic, bf16, fp32 Adam, full remat), {args.ppo_minibatch} "
            f"rollouts x ({args.prompt_len} + {args.response_len}) tokens",
        },
        "plans": plans,
    }
    save_results(args.name, result, "".join(lines))


def summary(plans: list[dict]) -> list[str]:
    """Per program, model, topology and attention: GiB per device (arguments + temporaries) of the first setting
    that fits, or "no"; and the 64-pairs-per-pass attempt's (grad_accum 1) for comparison."""
    gib = 2**30
    groups: dict = {}
    for p in plans:
        groups.setdefault((p["program"], p["model"], p["topology"], p["chips"], p["attention"]), []).append(p)
    lines = [
        "| program | model | topology | chips | attention | first attempt (all rows in one pass) | first that fits |\n",
        "|---|---|---|---|---|---|---|\n",
    ]
    for (program, model, topology, chips, attention), rows in groups.items():
        first = rows[0]
        first_text = "refused" if "error" in first else f"{first['per_device_total_bytes'] / gib:.1f} GiB"
        fit = next((p for p in rows if p.get("fits")), None)
        fit_text = "no" if fit is None else f"{fit['per_device_total_bytes'] / gib:.1f} GiB ({setting_of(fit)})"
        lines.append(f"| {program} | {model} | {topology} | {chips} | {attention} | {first_text} | {fit_text} |\n")
    return lines


if __name__ == "__main__":
    main()
