"""TPU-pod readiness without a TPU: the InfoRM train step compiled ahead of time for TPU topologies, per-device
memory and the mesh each uses (the planning command of `inform-jax plan`, needs the tpu extra for libtpu).

    python benchmarks/tpu_plans.py                         # Llama-3-8B and Pythia-6.9B on v4, v5e, v5p, 8 and 64 chips
    python benchmarks/tpu_plans.py --models pythia-6.9b --topologies v5p:2x2x2

Each plan compiles the real step (bf16 compute, float32 parameters and AdamW state, full remat, scanned layers,
FSDP over every device) at full depth for 64 pairs x 2048 tokens a step (rounded up to a multiple of the device
count); nothing is allocated. A plan the TPU compiler refuses for memory is reported as not fitting. Writes
benchmarks/results/tpu_plans-<platform>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the TPU is only a compile target here

import jax  # noqa: E402
from _common import save_results  # noqa: E402

from inform_jax.train.config import config_from_dict  # noqa: E402
from inform_jax.train.plan import plan_rm_train_step, topology_devices  # noqa: E402

TOPOLOGIES = ("v4:2x2x2", "v4:4x4x4", "v5e:2x4", "v5e:8x8", "v5p:2x2x2", "v5p:4x4x4")  # 8 and 64 chips each


def inform_config(preset: str, batch: int, length: int):
    return config_from_dict({
        "method": "inform",
        "model": {"preset": preset, "dtype": "bfloat16", "param_dtype": "float32", "scan_layers": True,
                  "remat": "full"},
        "head": {"latent_dim": 128},
        "data": {"max_length": length},
        "train": {"batch_size": batch, "max_steps": 1000},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    })  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["llama-3-8b", "pythia-6.9b"])
    parser.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES))
    parser.add_argument("--batch", type=int, default=64, help="preference pairs per step")
    parser.add_argument("--length", type=int, default=2048)
    args = parser.parse_args()
    gib = 2**30
    plans = []
    for preset in args.models:
        for topology in args.topologies:
            start = time.perf_counter()
            devices = topology_devices(topology)
            batch = -(-args.batch // len(devices)) * len(devices)  # FSDP shards the batch over every device
            try:
                plan = plan_rm_train_step(inform_config(preset, batch, args.length), devices)
            except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a program that cannot fit
                if "RESOURCE_EXHAUSTED" not in str(e):
                    raise
                plans.append({"model": preset, "topology": topology, "devices": len(devices), "batch_pairs": batch,
                              "fits": False,
                              "error": str(e).splitlines()[0][:300]})  # fmt: skip
                print(f"{preset} {topology}: does not fit ({plans[-1]['error']})", flush=True)
                continue
            plans.append({"model": preset, "topology": topology, "batch_pairs": batch, **plan,
                          "compile_s": time.perf_counter() - start})  # fmt: skip
            print(f"{preset} {topology}: {plan['per_device_total_bytes'] / gib:.1f} GiB per device "
                  f"({plan['fits']}), mesh {plan['mesh']}", flush=True)  # fmt: skip
    lines = ["| model | topology | devices | pairs / step | mesh | per-device GiB (args / temps / total) | HBM GiB "
             "| fits |\n",
             "|---|---|---|---|---|---|---|---|\n"]  # fmt: skip
    for p in plans:
        if "error" in p:
            head = f"| {p['model']} | {p['topology']} | {p['devices']} | {p['batch_pairs']} "
            lines.append(f"{head}| fsdp {p['devices']} | refused by the "
                         f"compiler: {p['error']} | - | no |\n")  # fmt: skip
            continue
        m = p["per_device_bytes"]
        mesh = " x ".join(f"{k} {v}" for k, v in p["mesh"].items() if v > 1) or "1 device"
        hbm = "-" if p["hbm_bytes"] is None else f"{p['hbm_bytes'] / gib:.0f}"
        head = f"| {p['model']} | {p['topology']} | {p['devices']} | {p['batch_pairs']} "
        lines.append(f"{head}| {mesh} | {m['arguments'] / gib:.1f} / "
                     f"{m['temporaries'] / gib:.1f} / {p['per_device_total_bytes'] / gib:.1f} | {hbm} | "
                     f"{'yes' if p['fits'] else 'no' if p['fits'] is False else '-'} |\n")  # fmt: skip
    result = {"step": "InfoRM train step (bf16, fp32 AdamW, full remat)", "batch_pairs": args.batch,
              "length": args.length, "plans": plans}  # fmt: skip
    save_results("tpu_plans", result, "".join(lines))


if __name__ == "__main__":
    main()
