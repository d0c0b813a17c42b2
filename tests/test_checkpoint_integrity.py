"""Checkpoint digests and fallback: a corrupt, cut, incomplete or half-deleted latest checkpoint is named and passed
over, the run resumes from the one before and ends where an uninterrupted run ends; none good stops with the folder
named. Tiny reward models (tests/test_rm_trainer.py's) and one tiny PPO run (tests/test_ppo.py's)."""

import json
import os

import jax
import numpy as np
import pytest
from test_ppo import make_trainer as make_ppo_trainer
from test_rm_trainer import assert_same_params, make_config, marked_pairs, one_device

from inform_jax.train.checkpoints import DIGEST, CheckpointsUnusable
from inform_jax.train.rm.trainer import RewardModelTrainer

DATA = marked_pairs(40, 11)


def rm_trainer(folder):
    config = make_config(folder, "inform", train=dict(max_steps=6, save_every=2))
    return RewardModelTrainer(config, DATA, mesh=one_device())


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    trainer = rm_trainer(tmp_path_factory.mktemp("whole"))
    trainer.fit()
    return trainer


def killed_run(folder):
    """A run killed after step 5: checkpoints 2 and 4 on disk, both complete with their digests."""
    rm_trainer(folder).fit(stop_after=5)
    assert sorted(os.listdir(folder / "checkpoints")) == ["2", "4"]
    for step in ("2", "4"):
        assert (folder / "checkpoints" / step / DIGEST).exists()
    return folder / "checkpoints"


def largest_file(step_folder):
    files = [p for p in step_folder.rglob("*") if p.is_file() and p.name != DIGEST]
    return max(files, key=lambda p: p.stat().st_size)


def flip(path, count=64):
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - count // 2
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    path.write_bytes(bytes(data))


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def bad_lines(printed):
    return [line for line in printed.splitlines() if "is bad" in line]


def test_digest_lists_every_file_with_size_and_sha256(tmp_path):
    checkpoints = killed_run(tmp_path)
    digest = json.loads((checkpoints / "4" / DIGEST).read_text())
    listed = {entry["path"]: entry for entry in digest["files"]}
    on_disk = {str(p.relative_to(checkpoints / "4")) for p in (checkpoints / "4").rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {DIGEST}
    data = largest_file(checkpoints / "4")
    assert listed[str(data.relative_to(checkpoints / "4"))]["size"] == data.stat().st_size


@pytest.mark.parametrize(
    "damage,reason",
    [
        ("flip", "does not match its sha256"),
        ("truncate", "bytes, its digest says"),
        ("delete", "is missing"),
        ("no digest", "the save did not complete"),
    ],
)
def test_a_bad_latest_checkpoint_falls_back_to_the_previous(tmp_path, whole, capsys, damage, reason):
    checkpoints = killed_run(tmp_path)
    data = largest_file(checkpoints / "4")
    if damage == "flip":
        flip(data)
    elif damage == "truncate":
        truncate(data)
    elif damage == "delete":
        data.unlink()
    else:  # killed after orbax finalized step 4, before its digest was written
        (checkpoints / "4" / DIGEST).unlink()
    capsys.readouterr()
    resumed = rm_trainer(tmp_path)
    resumed.fit()
    lines = bad_lines(capsys.readouterr().out)
    assert len(lines) == 1 and "checkpoint step 4 is bad" in lines[0] and reason in lines[0], lines
    assert "resuming from step 2" in lines[0]
    if damage != "no digest":
        assert str(data.relative_to(checkpoints / "4")) in lines[0]
    assert (tmp_path / "bad_checkpoints" / "4").is_dir()  # kept to look at, out of orbax's way
    assert resumed.step == 6
    assert_same_params(whole, resumed, rtol=0, atol=0)
    assert sorted(os.listdir(checkpoints)) == ["4", "6"]  # step 4 saved anew, with its digest
    assert (checkpoints / "4" / DIGEST).exists() and (checkpoints / "6" / DIGEST).exists()


def test_checkpoints_from_before_digests_resume_unverified(tmp_path, whole, capsys):
    checkpoints = killed_run(tmp_path)
    for step in ("2", "4"):
        (checkpoints / step / DIGEST).unlink()
    capsys.readouterr()
    resumed = rm_trainer(tmp_path)
    resumed.fit()
    printed = capsys.readouterr().out
    assert "checkpoint step 4: no digest" in printed and "restored unverified" in printed
    assert not bad_lines(printed)
    assert_same_params(whole, resumed, rtol=0, atol=0)


def test_an_unverified_checkpoint_orbax_cannot_read_falls_back(tmp_path, whole, capsys):
    """Without digests (an old run folder) the fallback still catches what orbax itself refuses."""
    checkpoints = killed_run(tmp_path)
    for step in ("2", "4"):
        (checkpoints / step / DIGEST).unlink()
    (checkpoints / "4" / "default" / "_METADATA").unlink()
    capsys.readouterr()
    resumed = rm_trainer(tmp_path)
    resumed.fit()
    lines = bad_lines(capsys.readouterr().out)
    assert len(lines) == 1 and "checkpoint step 4 is bad: orbax could not restore it" in lines[0], lines
    assert_same_params(whole, resumed, rtol=0, atol=0)


def test_no_good_checkpoint_stops_naming_the_folder(tmp_path):
    checkpoints = killed_run(tmp_path)
    flip(largest_file(checkpoints / "4"))
    truncate(largest_file(checkpoints / "2"))
    with pytest.raises(CheckpointsUnusable) as caught:
        rm_trainer(tmp_path).fit()
    message = str(caught.value)
    assert message.startswith(f"{checkpoints}: no usable checkpoint") and "\n" not in message and len(message) < 600
    assert "step 4:" in message and "step 2:" in message
    assert sorted(os.listdir(checkpoints)) == ["2", "4"] and not (tmp_path / "bad_checkpoints").exists()


def test_ppo_falls_back_past_a_corrupt_checkpoint(tmp_path, capsys):
    common = ("train.iterations=6", "train.save_every=2", "kl.coef=0.05", "kl.adaptive=true")
    whole = make_ppo_trainer(tmp_path / "whole", *common)
    whole.fit()
    make_ppo_trainer(tmp_path / "killed", *common).fit(stop_after=5)
    flip(largest_file(tmp_path / "killed" / "checkpoints" / "4"))
    capsys.readouterr()
    resumed = make_ppo_trainer(tmp_path / "killed", *common)
    resumed.fit()
    lines = bad_lines(capsys.readouterr().out)
    assert len(lines) == 1 and "checkpoint step 4 is bad" in lines[0] and "resuming from step 2" in lines[0]
    assert resumed.iteration == 6
    for a, b in zip(jax.tree.leaves(whole.actor_params), jax.tree.leaves(resumed.actor_params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert whole.kl_coef == resumed.kl_coef
