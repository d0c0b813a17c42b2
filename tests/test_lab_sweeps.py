"""The tuning sweeps (experiments/lab/sweeps.py): the ladder an edge extends along, which axes a choice lies on an
edge of, the criterion, the extension loop on a known criterion surface, the tuned evaluation summary, and the
sweep table of RESULTS.md."""

import numpy as np
import pytest

import experiments.lab.sweeps as sweeps
from experiments.lab.__main__ import _tuning_table
from experiments.lab.paired import GRID_REFERENCE
from inform_jax.eval.matched_kl import gold_at_kl, reference_budgets


def test_extend_steps_one_ladder_value_beyond_the_end():
    assert sweeps.extend("actor_lr", 2e-4, up=True) == 4e-4
    assert sweeps.extend("actor_lr", 5e-5, up=False) == 2.5e-5
    assert sweeps.extend("kl", 0.3, up=True) == 1.0
    assert sweeps.extend("kl", 0.1, up=False) == 0.03
    assert sweeps.extend("eppo_penalty_ratio", 0.1, up=True) == 0.3
    assert sweeps.extend("inform_beta", 0.01, up=False) == 0.001
    assert sweeps.extend("inform_beta", 0.1, up=True) == 1.0


def test_on_edges_names_the_axes_and_directions():
    grid = sweeps.grid_points({"actor_lr": (1e-4, 2e-4), "kl": (0.1, 0.3)})
    assert len(grid) == 4 and {"actor_lr": 2e-4, "kl": 0.1} in grid
    assert sweeps.on_edges({"actor_lr": 2e-4, "kl": 0.1}, grid) == [("actor_lr", True), ("kl", False)]
    wide = sweeps.grid_points({"actor_lr": (5e-5, 1e-4, 2e-4), "kl": (0.03, 0.1, 0.3)})
    assert sweeps.on_edges({"actor_lr": 1e-4, "kl": 0.1}, wide) == []  # interior on both axes
    assert sweeps.on_edges({"actor_lr": 1e-4, "kl": 0.3}, wide) == [("kl", True)]


def _checkpoints(kl, gold):
    return [{"kl": float(k), "gold": float(g)} for k, g in zip(kl, gold, strict=True)]


def test_criterion_reads_gold_at_the_reference_peak_kl_or_the_last_checkpoint():
    rng = np.random.default_rng(2024)
    ref_kl = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 2.0, 8))])
    ref_gold = np.concatenate([[0.0], rng.normal(0.3, 0.2, 8)])
    budget = reference_budgets(ref_kl, ref_gold).budgets[1.0]
    run_kl = np.concatenate([[0.0], np.cumsum(rng.uniform(0.1, 3.0, 8))])
    run_gold = rng.normal(0.2, 0.3, 9)
    expected = gold_at_kl(run_kl, run_gold, budget)
    assert expected is not None
    assert sweeps.criterion(_checkpoints(ref_kl, ref_gold), _checkpoints(run_kl, run_gold)) == pytest.approx(expected)
    # a run that stays inside the budget is read at its last checkpoint
    slow_kl = run_kl * (0.5 * budget / run_kl.max())
    assert sweeps.criterion(_checkpoints(ref_kl, ref_gold), _checkpoints(slow_kl, run_gold)) == run_gold[-1]


def test_sweep_extends_an_edge_choice_until_it_is_interior(monkeypatch):
    """On a criterion surface peaking at lr 4e-4 and KL 0.3, a 2x2 grid at lr (1e-4, 2e-4) x KL (0.1, 0.3)
    extends lr and KL up from (2e-4, 0.3), then lr again from (4e-4, 0.3), and stops there: interior on both."""
    peak = {"actor_lr": np.log(4e-4), "kl": np.log(0.3)}
    score = lambda p: -sum((np.log(p[f]) - peak[f]) ** 2 for f in peak)  # noqa: E731
    calls = []

    def fake_run_grid(settings, seeds, methods, *, size, work, cache):
        out = {}
        for name, overrides in settings.items():
            calls.append(name)
            method = overrides["methods"][0]
            point = {f: overrides[f] for f in overrides if f in peak or f == "actor_lr"}
            value = score(point) if method == "PPO w/ KL" else 0.0
            # a run whose KL never reaches the reference's budget reads its last checkpoint: that is the value
            run = _checkpoints([0.0, 0.0], [0.0, value])
            reference = _checkpoints([0.0, 1.0, 2.0], [0.0, 1.0, 0.5])
            out[name] = {s: {"heldout": {method: reference if method == "PPO" else run}} for s in seeds}
        return out

    monkeypatch.setattr(sweeps, "run_grid", fake_run_grid)
    grids = {"PPO w/ KL": {"actor_lr": (1e-4, 2e-4), "kl": (0.1, 0.3)}}
    result = sweeps.sweep(("PPO w/ KL",), (100, 101), {}, "unused", None, grids=grids, rounds=3)["PPO w/ KL"]
    assert result["chosen"] == {"actor_lr": 4e-4, "kl": 0.3}
    assert result["edge"] == [] and result["rounds"] == 2
    tried = [p["point"] for p in result["points"]]
    assert tried[4:] == [{"actor_lr": 4e-4, "kl": 0.3}, {"actor_lr": 2e-4, "kl": 1.0}, {"actor_lr": 8e-4, "kl": 0.3}]
    assert max(tried, key=score) == result["chosen"]
    # with no extension rounds the choice stays on the grid and its edges are reported
    capped = sweeps.sweep(("PPO w/ KL",), (100,), {}, "unused", None, grids=grids, rounds=0)["PPO w/ KL"]
    assert capped["chosen"] == {"actor_lr": 2e-4, "kl": 0.3} and capped["edge"] == ["actor_lr", "kl"]


def test_every_table1_method_sweeps_a_grid_of_the_same_size():
    """Equal tuning budgets (PROTOCOL.md sections 9 and 18): InfoRM and every rival of Table 1 sweep 4 settings,
    each a known LabConfig field with a ladder to extend along."""
    from inform_jax.lab.config import LabConfig

    assert set(sweeps.SWEEP_GRIDS) >= {"InfoRM", *sweeps.TABLE1_RIVALS}
    # section 18: the ensemble and WARM have no knob of their own in the lab's PPO, so they sweep PPO's grid
    assert sweeps.SWEEP_GRIDS["Ensemble RM"] == sweeps.SWEEP_GRIDS["WARM"] == sweeps.SWEEP_GRIDS["PPO"]
    fields = set(LabConfig.__dataclass_fields__)
    for method, grid in sweeps.SWEEP_GRIDS.items():
        assert len(sweeps.grid_points(grid)) == 4, method
        assert set(grid) <= fields, method
        for field, values in grid.items():  # an edge choice extends either way along the field's own ladder
            assert sweeps.extend(field, max(values), up=True) > max(values), (method, field)
            assert sweeps.extend(field, min(values), up=False) < min(values), (method, field)


def test_half_the_paper_margin_and_the_margin_measure():
    from inform_jax.lab.verdicts import MEASURES

    wins_minus_losses = [w - lose for w, lose in sweeps.PAPER_TABLE1["WARM"]]
    assert sweeps.half_paper_margin("WARM") == pytest.approx(np.mean(wins_minus_losses) / 200)
    read = MEASURES["win minus lose beyond half the paper's margin"]
    assert read({"win_minus_lose": {"WARM": 0.3}}, "WARM") == pytest.approx(0.3 - sweeps.half_paper_margin("WARM"))
    assert read({}, sweeps.ZERO) == 0.0


def test_tuned_summary_swaps_runs_and_keeps_the_grid_ppo_as_the_kl_reference():
    rng = np.random.default_rng(7)
    prompts = 12

    def run(kls):
        return [{"kl": float(k), "gold": 0.0, "gold_per_prompt": rng.normal(size=prompts).tolist()} for k in kls]

    methods = ("PPO", "PPO w/ KL", "InfoRM", "Ensemble RM", "WARM")
    heldout = {m: run([0.0, 1.0, 2.0, 3.0]) for m in methods}
    finals = {m: rng.normal(size=prompts).tolist() for m in methods}
    grid = {"heldout": heldout, "overoptimization": {m: {"gold_peak": 0.0} for m in methods},
            "final_gold_per_prompt": finals, "sft_gold_per_prompt": rng.normal(size=prompts).tolist()}  # fmt: skip
    tuned_ppo = run([0.0, 5.0, 10.0, 20.0])
    tuned_final = rng.normal(size=prompts).tolist()
    tuned = {"PPO": {"heldout": {"PPO": tuned_ppo}, "overoptimization": {"PPO": {"gold_peak": 1.0}},
                     "final_gold_per_prompt": {"PPO": tuned_final}}}  # fmt: skip
    out = sweeps.tuned_summary(grid, tuned, margin=0.1)
    assert out["heldout"]["PPO"] is tuned_ppo and grid["heldout"]["PPO"] is not tuned_ppo  # the grid is untouched
    assert out["matched_kl"]["reference"] == GRID_REFERENCE
    ref = np.array([c["gold_per_prompt"] for c in heldout["PPO"]]).mean(1)
    assert out["matched_kl"]["budgets"]["1"] == pytest.approx(reference_budgets([0.0, 1.0, 2.0, 3.0], ref).peak_kl)
    d = np.subtract(finals["InfoRM"], tuned_final)
    expected = ((d > 0.1).sum() - (d < -0.1).sum()) / prompts
    assert out["win_minus_lose"]["PPO"] == pytest.approx(expected)


def test_tuning_table_bolds_the_choice_and_reports_edges():
    study = {"tuning_seeds": [100, 101], "tuning": {"PPO": {
        "points": [{"point": {"actor_lr": 1e-4}, "mean": 0.25}, {"point": {"actor_lr": 2e-4}, "mean": 0.5}],
        "chosen": {"actor_lr": 2e-4}, "edge": ["actor_lr"], "rounds": 2}}}  # fmt: skip
    row = _tuning_table(study)[-1]
    assert row == "| PPO | lr 0.0001: 0.250, **lr 0.0002: 0.500** | lr 0.0002 | lr | 2 |"
