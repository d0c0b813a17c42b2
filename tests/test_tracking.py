"""Experiment tracking (`train.report_to`): TensorBoard event files hold metrics.jsonl's numbers, a resumed run
purges what the killed run logged past its checkpoint, W&B offline runs live in the run folder, figures go as
images, and a bad reporter name is refused."""

import glob
import os
import struct

import pytest

from inform_jax.cli import main
from inform_jax.train.config import load_config
from inform_jax.train.metrics_log import MetricsLog, read_metrics
from inform_jax.world.world import SyntheticWorld

TINY = "{vocab_size: 96, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 4}"


def read_events(folder) -> list:
    """Every Event of the TensorBoard files under `folder`, oldest file first (TFRecord framing: length, its CRC,
    the Event protobuf, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(glob.glob(f"{folder}/**/events.out.tfevents.*", recursive=True), key=os.path.getmtime):
        data = open(path, "rb").read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            events.append(Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return events


def tb_scalars(folder) -> dict[tuple[str, int], float]:
    """(tag, step) -> value, later events winning, with TensorBoard's purge rule: a session-log START at step s
    drops what was logged before it at steps >= s."""
    values: dict[tuple[str, int], float] = {}
    for event in read_events(folder):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            values = {k: v for k, v in values.items() if k[1] < event.step}
        for value in event.summary.value:
            if value.HasField("simple_value"):
                values[(value.tag, event.step)] = value.simple_value
    return values


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return SyntheticWorld().write(out, n_train=64, n_test=16, n_sft=8, n_prompts_train=8, n_prompts_test=8)


def test_train_rm_writes_tensorboard_scalars_equal_to_metrics_jsonl(tmp_path, world):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    args = [
        "train-rm", "--method", "inform", "--output-dir", str(out),
        "--set", f"model.config={TINY}", "--set", "model.dtype=float32", "--set", "mesh.fsdp=1",
        "--set", f"data.train={world['prefs_train_hh.jsonl']}", "--set", f"data.eval={world['prefs_test.jsonl']}",
        "--set", f"data.tokenizer={world['tokenizer']}", "--set", "data.max_length=40", "--set", "head.latent_dim=8",
        "--set", "train.batch_size=16", "--set", "train.eval_every=2", "--set", "train.log_every=1",
        "--set", "train.progress=false", "--set", "train.report_to=[jsonl, tensorboard]", "--set", "train.save_every=2",
    ]  # fmt: skip
    assert main([*args, "--set", "train.max_steps=4"]) == 0
    scalars = tb_scalars(out / "tensorboard")
    records = read_metrics(str(out / "metrics.jsonl"))
    compared = 0
    for record in records:
        for key, value in record.items():
            if key not in ("step", "split") and isinstance(value, int | float) and not isinstance(value, bool):
                tag = f"{record['split']}/{key}"  # train and eval records of one step share keys
                assert scalars[(tag, record["step"])] == pytest.approx(value, rel=1e-6, abs=1e-7), (key, record)
                compared += 1
    assert compared > 10 and {s for _, s in scalars} == {r["step"] for r in records} == {1, 2, 3, 4}


def test_a_resumed_log_replaces_what_the_killed_run_logged_after_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboardX")
    path = str(tmp_path / "metrics.jsonl")
    log = MetricsLog(path, report_to=["tensorboard"])
    for step in (1, 2, 3, 4):  # killed after step 4, last checkpoint at step 2
        log.write({"step": step, "loss": float(step)})
    log.close()
    log = MetricsLog(path, resume_from=2, report_to=["tensorboard"])
    for step in (3, 4):
        log.write({"step": step, "loss": 10.0 * step})
    log.close()
    assert [r["loss"] for r in read_metrics(path)] == [1.0, 2.0, 30.0, 40.0]
    assert tb_scalars(tmp_path / "tensorboard") == {("loss", 1): 1.0, ("loss", 2): 2.0, ("loss", 3): 30.0,
                                                    ("loss", 4): 40.0}  # fmt: skip
    assert [e.step for e in read_events(tmp_path / "tensorboard") if e.HasField("session_log")] == [3]


def test_figures_go_to_tensorboard_as_images_and_wandb_runs_offline_in_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    pytest.importorskip("wandb")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    figure = tmp_path / "curve.png"
    plt.figure(figsize=(2, 1.5))
    plt.plot([0, 1], [1, 0])
    plt.savefig(figure)
    plt.close()
    log = MetricsLog(str(tmp_path / "metrics.jsonl"), report_to=["jsonl", "tensorboard", "wandb"], config={"a": 1})
    for step in (1, 2):
        log.write({"step": step, "loss": 1.0 / step, "note": "text is left out", "nan": float("nan")})
    log.figure("gold_vs_kl", str(figure), step=2)
    log.close()
    scalars = tb_scalars(tmp_path / "tensorboard")
    assert scalars == {("loss", 1): 1.0, ("loss", 2): 0.5}
    images = [v for e in read_events(tmp_path / "tensorboard") for v in e.summary.value if v.HasField("image")]
    assert len(images) == 1 and images[0].tag == "gold_vs_kl" and images[0].image.height == 150
    run_id = (tmp_path / "wandb_run_id").read_text()
    runs = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    assert len(runs) == 1 and os.path.getsize(runs[0]) > 0


def test_an_unknown_reporter_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="train.report_to"):
        load_config(None, ["train.report_to=[jsonl, mlflow]"])


def test_the_labs_runs_and_report_figures_go_to_the_trackers(tmp_path):
    pytest.importorskip("tensorboardX")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inform_jax.lab.config import LabConfig
    from inform_jax.lab.runs import ppo_config
    from inform_jax.train.tracking import report_figures

    paths = []
    for name in ("gold", "wins-ppo", "wins-sft"):
        plt.figure(figsize=(2, 1))
        plt.plot([0, 1])
        plt.savefig(tmp_path / f"{name}.png")
        plt.close()
        paths.append(str(tmp_path / f"{name}.png"))
    figures = {"gold_proxy": paths[0], "wins": {"PPO": paths[1], "SFT": paths[2]}}
    sent = report_figures(str(tmp_path), ["jsonl", "tensorboard"], figures, step=12, config={}, name="lab report",
                          values={"final_gold/PPO": 0.5})  # fmt: skip
    events = read_events(tmp_path / "tensorboard")
    tags = sorted(v.tag for e in events for v in e.summary.value if v.HasField("image"))
    assert sent == 3 and tags == ["gold_proxy", "wins/PPO", "wins/SFT"]
    assert tb_scalars(tmp_path / "tensorboard") == {("final_gold/PPO", 12): 0.5}
    # jsonl alone sends nothing and writes no tracker files
    assert report_figures(str(tmp_path / "none"), ["jsonl"], figures, step=1, config={}, name="x") == 0
    assert not (tmp_path / "none" / "tensorboard").exists()
    # each method's PPO run gets the lab's report_to
    config = ppo_config(LabConfig(report_to=("jsonl", "tensorboard")), str(tmp_path / "run"), {"kl.coef": 0.1})
    assert config.train.report_to == ["jsonl", "tensorboard"] and config.kl.coef == 0.1
    assert ppo_config(LabConfig(), str(tmp_path / "run"), {}).train.report_to == ["jsonl"]
