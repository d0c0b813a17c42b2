"""Reward decomposition in the trainer: spliced scoring, the prompt-free priority schedule, exact resume, RRM
augmentation, RewardBench-style reports, and the decompose / evaluate-rm / toy-study commands."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from inform_jax.cli import main
from inform_jax.data.preference import PreferencePair
from inform_jax.data.rrm import rrm_augment
from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.eval.decomposition import PairTokens, decompose, score_spliced
from inform_jax.eval.rm_eval import rewardbench_report
from inform_jax.models import DecoderConfig, make_mesh
from inform_jax.models.reward_model import HeadConfig, RewardModel, save_reward_model
from inform_jax.train.config import DataSection, config_from_dict
from inform_jax.train.rm.data import prepare_pairs
from inform_jax.train.rm.trainer import RewardModelTrainer
from inform_jax.world.decomposition import toy_pairs, write_toy_sets
from inform_jax.world.vocab import NUMBER_WORDS
from inform_jax.world.world import SyntheticWorld

ROOT = os.path.dirname(os.path.dirname(__file__))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    files = write_toy_sets(SyntheticWorld(), tmp_path_factory.mktemp("toy"), n_train=48, n_test=16, seed=0)
    tokenizer = load_tokenizer(files["tokenizer"])
    arrays = prepare_pairs(files["length_train.jsonl"], tokenizer, DataSection(max_length=24), log=lambda *_: None)
    return files, tokenizer, arrays


def tiny_rm(tokenizer, kind="scalar", seed=0):
    config = DecoderConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2)  # fmt: skip
    return RewardModel.create(config, HeadConfig(kind=kind, latent_dim=8), rngs=nnx.Rngs(seed))


def test_spliced_sequences_score_as_if_tokenized_directly(toy):
    files, tokenizer, arrays = toy
    model = tiny_rm(tokenizer, "ib")
    tokens = PairTokens(arrays, tokenizer.pad_token_id)
    rows = [json.loads(line) for line in open(files["length_train.jsonl"])]
    prompt_idx, response_idx = np.array([3, 0, 7, 5]), np.array([1, 2 + 48, 7, 40 + 48])
    got = score_spliced(model, tokens, prompt_idx, response_idx, batch_size=3)
    for g, p, r in zip(got, prompt_idx, response_idx, strict=True):
        side = "chosen" if r < 48 else "rejected"
        ids = (
            tokenizer(rows[p]["prompt"])["input_ids"]
            + tokenizer(rows[r % 48][side], add_special_tokens=False)["input_ids"]
            + [tokenizer.eos_token_id]
        )
        ids = np.asarray([ids], np.int32)
        assert g == pytest.approx(float(model(ids, np.ones_like(ids)).reward[0]), rel=1e-4, abs=1e-5)


def test_decompose_true_prompt_gap_and_identity(toy):
    _, tokenizer, arrays = toy
    model = tiny_rm(tokenizer)
    parts = decompose(model, PairTokens(arrays, tokenizer.pad_token_id), num_prompts=4, seed=1)
    direct = (
        model(arrays["chosen_input_ids"], arrays["chosen_attention_mask"]).reward
        - model(arrays["rejected_input_ids"], arrays["rejected_attention_mask"]).reward
    )
    np.testing.assert_allclose(parts["dr"], np.asarray(direct), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(parts["dr1"] + parts["dr2"], parts["dr"], rtol=1e-5, atol=1e-6)
    assert parts["dr_other"].shape == (48, 4)
    lo, hi = parts["dr_other"].min(1), parts["dr_other"].max(1)
    assert np.all((parts["dr2"] >= lo - 1e-5) & (parts["dr2"] <= hi + 1e-5))  # the root lies in the bracket


def dir_config(files, out, steps=8):
    return config_from_dict(dict(
        method="dir", model=dict(config=dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                                             num_kv_heads=4, vocab_size=200), dtype="float32"),
        data=dict(max_length=24), decomposition=dict(num_prompts=4, warmup_steps=4, refresh_every=2, keep_fraction=0.5),
        optim=dict(lr=1e-3), train=dict(batch_size=8, max_steps=steps, save_every=3, log_every=100, eval_every=100,
                                        output_dir=str(out), progress=False),
    ))  # fmt: skip


def test_priority_schedule_weights_and_exact_resume(tmp_path, toy):
    files, tokenizer, arrays = toy
    seen = {}

    def record(trainer, step):
        seen[step] = trainer.pair_weights.copy()

    config = dir_config(files, tmp_path / "full")
    mesh = make_mesh(devices=jax.devices()[:1])
    # The method's own callback (the prompt-free priority) comes from the registry; `record` runs after it.
    full = RewardModelTrainer(config, arrays, mesh=mesh, callbacks=[(1, record)])
    full.fit()
    # Plain BT before step 4; refreshes at 4, 6, 8 (multiples of 2 from the warm-up on).
    assert all(np.all(seen[s] == 1.0) for s in (1, 2, 3))
    for s in (4, 6, 8):
        w = seen[s]
        assert np.mean(w) == pytest.approx(1.0) and np.sum(w > 0) == 24  # keep_lowest 0.5 of 48, mean 1
        saved = np.load(tmp_path / "full" / "decomposition" / f"step_{s}.npz")
        np.testing.assert_array_equal(saved["weights"], w)
        kept_dr2 = saved["dr2"][w > 0]
        assert kept_dr2.max() <= np.sort(saved["dr2"])[23] + 1e-6  # the kept pairs are the lowest dr2
    assert np.array_equal(seen[5], seen[4]) and not np.array_equal(seen[6], seen[4])

    config = dir_config(files, tmp_path / "resumed")
    first = RewardModelTrainer(config, arrays, mesh=mesh)
    first.fit(stop_after=5)  # killed after step 5; the last checkpoint is step 3
    second = RewardModelTrainer(config, arrays, mesh=mesh)
    second.fit()
    np.testing.assert_array_equal(second.pair_weights, full.pair_weights)
    for a, b in zip(jax.tree.leaves(second.params), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_rrm_augmentation_uses_other_prompts_responses():
    pairs = [PreferencePair(f"p{i}", f"good {i}", f"bad {i}", row=i) for i in range(10)]
    out = rrm_augment(pairs, factor=2.0, seed=0)
    assert out[:10] == pairs and len(out) == 30
    for pair in out[10:]:
        i = int(pair.prompt[1:])
        assert pair.extra["rrm"] and pair.chosen in (f"good {i}", f"bad {i}")
        assert pair.rejected.split()[1] != str(i)  # the rejected side answers another prompt
    with pytest.raises(ValueError, match="at least 2 pairs"):
        rrm_augment(pairs[:1])


def test_rewardbench_report_by_hand():
    chosen = np.array([1.0, 0.0, 2.0, 3.0, 1.0])
    rejected = np.array([0.0, 1.0, 1.0, 3.0, 0.0])  # the tie counts as wrong, as RewardBench counts
    report = rewardbench_report(chosen, rejected, ["alpacaeval-easy", "alpacaeval-easy", "hep-go", "math-prm", "x"])
    assert report["overall"] == pytest.approx(3 / 5)
    assert report["subsets"]["alpacaeval-easy"] == {"accuracy": 0.5, "n": 2}
    assert report["categories"]["reasoning"] == {"accuracy": 0.5, "n": 2}
    assert report["categories"]["other"] == {"accuracy": 1.0, "n": 1}


def test_toy_sets_bias_and_gold_order():
    world = SyntheticWorld()
    for kind in ("length", "adversarial", "shifted_count"):
        rows = toy_pairs(world, kind, 40, 0.75, seed=3)
        assert sum(r["bias_aligned"] for r in rows) == 30
        assert all(r["gold_chosen"] > r["gold_rejected"] for r in rows)
    rows = toy_pairs(world, "length", 40, 1.0, seed=0)
    assert all(len(r["chosen"].split()) > len(r["rejected"].split()) for r in rows)
    # Shifted count: the chosen run is what was asked; the rejected one as long, shifted by 1-3, up exactly when
    # the pair is bias-aligned (then the run of smaller numbers wins).
    number = {w: i for i, w in enumerate(NUMBER_WORDS)}
    for r in toy_pairs(world, "shifted_count", 200, 0.5, seed=int(np.random.default_rng(1001).integers(1000))):
        asked = [number[w] for w in r["prompt"].split() if w in number]
        chosen, rejected = ([number[w] for w in r[side].split()] for side in ("chosen", "rejected"))
        assert chosen == list(range(asked[0], asked[-1] + 1)) and len(rejected) == len(chosen)
        shift = rejected[0] - chosen[0]
        assert rejected == [n + shift for n in chosen] and 1 <= abs(shift) <= 3 and (shift > 0) == r["bias_aligned"]


def test_decompose_and_evaluate_commands(tmp_path, toy, capsys):
    files, tokenizer, _ = toy
    rm = tmp_path / "rm"
    save_reward_model(tiny_rm(tokenizer), str(rm))
    tokenizer.save_pretrained(str(rm))
    out = str(tmp_path / "dec")
    code = main(["decompose", "--rm", str(rm), "--data", files["adversarial_train.jsonl"], "--out", out,
                 "--color", "adversarial", "--num-prompts", "4", "--max-length", "24"])  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "dec" / "summary.json").read_text())
    assert summary["pairs"] == 48 and 0 <= summary["swapped_accuracy"] <= 1
    rows = [json.loads(line) for line in open(tmp_path / "dec" / "pairs.jsonl")]
    assert len(rows) == 48 and sum(r["red"] for r in rows) == round(0.15 * 48)
    assert (tmp_path / "dec" / "quadrants.png").stat().st_size > 1000
    data = tmp_path / "bench.jsonl"
    with open(data, "w") as f:
        for i, row in enumerate(json.loads(line) for line in open(files["length_test_debiased.jsonl"])):
            f.write(json.dumps({**row, "subset": "hep-go" if i % 2 else "alpacaeval-easy"}) + "\n")
    assert main(["evaluate-rm", "--rm", str(rm), "--data", str(data), "--max-length", "24",
                 "--out", str(tmp_path / "eval.json")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["categories"]) == {"chat", "reasoning"} and report["n"] == 16
    assert "gap_other_std" in report["prompt_diagnostics"]
    with pytest.raises(ValueError, match="no column 'missing'"):
        main(["decompose", "--rm", str(rm), "--data", files["adversarial_train.jsonl"], "--out", str(tmp_path / "d2"),
              "--color", "missing", "--max-length", "24"])  # fmt: skip


def _toy_studies():
    spec = importlib.util.spec_from_file_location(
        "toy_studies", os.path.join(ROOT, "experiments", "decomposition", "toy_studies.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prompt_free_share_is_one_for_a_prompt_blind_gap_and_zero_for_a_prompt_only_gap():
    share = _toy_studies().prompt_free_share
    gap = np.random.default_rng(1002).normal(size=50)
    assert share({"dr1": np.zeros(50), "dr2": gap}) == 1.0
    assert share({"dr1": gap, "dr2": np.zeros(50)}) == 0.0
    assert share({"dr1": gap, "dr2": -gap}) == pytest.approx(0.5)  # sign does not matter, only size


def test_toy_studies_smoke(tmp_path):
    module = _toy_studies()
    assert module.main(["--smoke", "--out", str(tmp_path), "--work", str(tmp_path / "work")]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    methods = ("standard", "rrm", "dir")  # the smoke size runs each method kind once, at two budgets
    kinds, budgets = ("length", "adversarial"), (6, 12)
    assert len(result["runs"]) == 12 and result["steps"] == list(budgets)
    assert set(result["summary"]) == {f"{k}/{m}/{b}" for k in kinds for m in methods for b in budgets}
    assert {(r["set"], r["method"], r["steps"]) for r in result["runs"]} == {
        (k, m, b) for k in kinds for m in methods for b in budgets
    }
    shares = [r["train_decomposition"]["prompt_free_share"] for r in result["runs"]]
    assert all(0.0 <= share <= 1.0 for share in shares) and len(set(shares)) > 1
    for kind in kinds:
        for stage in ("before", "after"):
            for steps in budgets:
                assert (tmp_path / f"quadrants-{kind}-{stage}-{steps}steps.png").exists()


def test_toy_studies_read_finished_runs_back_and_train_again_when_the_settings_change(tmp_path, monkeypatch):
    """A finished run is kept in the work folder (another job of the lab's --jobs, or a stopped run, reads it back
    with the same record and plot); a run made with other settings trains again."""
    module = _toy_studies()
    args = ["--smoke", "--sets", "adversarial", "--methods", "standard", "dir", "--work", str(tmp_path / "work")]
    assert module.main([*args, "--out", str(tmp_path / "first")]) == 0
    first = json.loads((tmp_path / "first" / "results.json").read_text())
    trained = []
    real = module.train_one
    monkeypatch.setattr(module, "train_one", lambda *a, **k: trained.append(a[:4]) or real(*a, **k))
    assert module.main([*args, "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert trained == [] and again["runs"] == first["runs"] and again["summary"] == first["summary"]
    for png in ("quadrants-adversarial-before-6steps.png", "quadrants-adversarial-after-12steps.png"):
        assert (tmp_path / "again" / png).exists()
    assert module.main([*args, "--bias", "0.9", "--out", str(tmp_path / "other")]) == 0
    assert len(trained) == 4  # every run of the other bias trained: 2 methods x 2 budgets
