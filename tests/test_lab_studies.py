"""The lab studies (experiments/lab): each runs end to end in its --smoke size and writes a study with a verdict
per claim; the verdict rule and the seed-averaged curves on hand-made cases."""

import json
import os

import numpy as np
import pytest

from experiments.lab.__main__ import main, write_results_md
from experiments.lab.common import binned_mean_curve, compare_verdict, fraction_verdict, spread
from experiments.lab.studies import STUDIES, paired_difference

# the old rule's verdicts, the paired rule's (lab.verdicts) and the arms' positive controls
VERDICTS = {
    "fires",
    "fails",
    "reproduced",
    "not reproduced",
    "mixed",
    "not measurable",
    "refuted",
    "inconclusive",
    "uninformative",
}


def test_every_study_runs_in_its_smoke_size(tmp_path, lab_cache):
    out = tmp_path / "results"
    args = ["all", "--smoke", "--out", str(out), "--work", str(tmp_path / "work"), "--cache", str(lab_cache)]
    assert main(args) == 0
    for name in STUDIES:
        study = json.loads((out / name / "study.json").read_text())
        assert study["claims"] and all(c["verdict"] in VERDICTS for c in study["claims"]), name
        assert all((out / name / fig).stat().st_size > 200 for fig in study["figures"])
        assert study["provenance"]["command"].startswith("python -m experiments.lab")
    page = write_results_md(str(out), str(tmp_path / "RESULTS.md"))
    text = open(page).read()
    assert all(
        c["claim"] in text for name in STUDIES for c in json.loads((out / name / "study.json").read_text())["claims"]
    )
    check_table1_reads_a_recorded_sweep(tmp_path, out, lab_cache)


def check_table1_reads_a_recorded_sweep(tmp_path, out, lab_cache):
    """Table 1 with --tuned-from the smoke run's own study: no sweep runs, the same choices, table and claims (the
    runs read back from the same work folder), the sweep's origin recorded and on the page; a sweep of another size
    is refused, naming the file."""
    from unittest import mock

    from experiments.lab import sweeps

    swept = out / "inform_table1" / "study.json"
    again, work = tmp_path / "again", str(tmp_path / "work")
    args = ["inform_table1", "--smoke", "--out", str(again), "--work", work, "--cache", str(lab_cache)]
    with mock.patch.object(sweeps, "sweep", side_effect=AssertionError("swept again")):
        assert main([*args, "--tuned-from", str(swept)]) == 0
    first, second = json.loads(swept.read_text()), json.loads((again / "inform_table1" / "study.json").read_text())
    for key in ("tuning", "chosen", "bottleneck", "table", "claims", "paired"):
        assert second[key] == first[key], key
    assert first["tuned_from"] is None
    assert second["tuned_from"] == {"path": str(swept), "provenance": first["provenance"]}
    page = open(write_results_md(str(again), str(tmp_path / "AGAIN.md"))).read()
    assert f"the choices were read from `{swept}`" in page
    with pytest.raises(SystemExit, match=f"--tuned-from {swept}: its sweep has size"):
        main(["inform_table1", "--quick", "--seeds", "0", "--out", str(again), "--work", work, "--tuned-from",
              str(swept)])  # fmt: skip


def test_verdict_rule():
    assert compare_verdict([2, 3, 4], [1, 2, 3]) == "reproduced"
    assert compare_verdict([2, 1, 4], [1, 2, 3]) == "mixed"  # mean better, one seed worse
    assert compare_verdict([0, 1, 2], [1, 2, 3]) == "not reproduced"
    assert compare_verdict([0, 1, 2], [1, 2, 3], higher=False) == "reproduced"
    assert fraction_verdict([True, True]) == "reproduced"
    assert fraction_verdict([True, False]) == "mixed"
    assert fraction_verdict([False]) == "not reproduced"
    s = spread([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["values"] == [1.0, 2.0, 3.0]


def test_binned_mean_curve_averages_per_seed_bins():
    rng = np.random.default_rng(0)
    runs = []
    for offset in (0.0, 1.0):
        kl = np.sort(rng.uniform(0, 10, 40))
        runs.append([{"kl": k, "gold": k + offset} for k in kl])
    centers, mean, std = binned_mean_curve(runs, "kl", "gold", bins=4)
    assert centers.shape == mean.shape == std.shape == (4,)
    assert np.all(np.diff(centers) > 0)
    # gold = kl + offset: the seed-mean of bin means is the bin's kl mean + 0.5, seeds 1 apart -> std near 0.5
    np.testing.assert_allclose(mean, centers + 0.5, atol=0.6)
    np.testing.assert_allclose(std, 0.5, atol=0.4)


def test_paired_difference_interval_matches_the_normal_approximation_and_counts_seeds():
    rng = np.random.default_rng(1002)
    theirs = rng.normal(size=400)
    ours = theirs + rng.normal(0.3, 1.0, size=400)
    ours[:5] = theirs[:5]  # a few ties
    diff = paired_difference(ours, theirs)
    d = ours - theirs
    half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)  # the bootstrap interval of a mean of 400 tends to this
    assert abs(diff["mean"] - d.mean()) < 1e-12
    np.testing.assert_allclose(diff["ci95"], [d.mean() - half, d.mean() + half], atol=0.15 * half)
    assert (diff["higher"], diff["lower"], diff["equal"]) == ((d > 0).sum(), (d < 0).sum(), 5)


def test_a_finished_run_with_the_same_config_is_read_back(tmp_path):
    """A killed study resumes from the runs it finished: same config -> the saved summary; else None."""
    from experiments.lab.common import finished_run

    config = {"seed": 3, "methods": ["PPO", "EPPO"], "sft_behaviour_probs": [0.5, 0.5]}
    assert finished_run(str(tmp_path), config) is None  # nothing there
    (tmp_path / "metrics.json").write_text(json.dumps({"final_gold": {"PPO": 0.25}}))
    assert finished_run(str(tmp_path), config) is None  # no config.json: the report was never finished
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert finished_run(str(tmp_path), dict(config, methods=("PPO", "EPPO"))) == {"final_gold": {"PPO": 0.25}}
    assert finished_run(str(tmp_path), dict(config, seed=4)) is None
    # a LabConfig field added after the run was saved: the run answers only while the field is at its default
    from inform_jax.lab.config import LabConfig

    assert finished_run(str(tmp_path), dict(config, bon_samples=LabConfig.bon_samples)) == {"final_gold": {"PPO": 0.25}}
    assert finished_run(str(tmp_path), dict(config, bon_samples=LabConfig.bon_samples + 1)) is None
    assert finished_run(str(tmp_path), dict(config, not_a_lab_field=1)) is None


def test_a_cached_result_is_computed_once_per_key(tmp_path):
    """A study part saved with its key is read back while the key is unchanged and computed again when it changes."""
    from inform_jax.lab.keyed_cache import cached_result

    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    path = str(tmp_path / "part" / "result.json")
    assert cached_result(path, {"seed": 1, "betas": (0.0, 0.1)}, compute) == {"value": 1}
    assert cached_result(path, {"seed": 1, "betas": [0.0, 0.1]}, compute) == {"value": 1}  # read back, as JSON
    assert cached_result(path, {"seed": 2, "betas": [0.0, 0.1]}, compute) == {"value": 2} and len(calls) == 2


def test_a_cached_lab_result_answers_for_a_config_with_a_field_added_at_its_default(tmp_path):
    """A study part keyed by a LabConfig (best-of-n pools, arm controls, sweep bottlenecks) is read back after a
    LabConfig field was added while that field is at its default, as finished runs are; otherwise it is computed."""
    from inform_jax.lab.config import LabConfig, config_key, same_lab_key
    from inform_jax.lab.keyed_cache import cached_result

    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    config = config_key(LabConfig(seed=3))
    older = {k: v for k, v in config.items() if k != "bon_samples"}  # saved before the field existed
    path = str(tmp_path / "part.json")
    assert cached_result(path, {"config": older, "betas": [0.0]}, compute, same_lab_key) == {"value": 1}
    assert cached_result(path, {"config": config, "betas": [0.0]}, compute, same_lab_key) == {"value": 1}
    assert cached_result(path, {"config": config, "betas": [0.0]}, compute) == {"value": 2}  # plain equality
    assert len(calls) == 2
    older_path = str(tmp_path / "older.json")
    cached_result(older_path, {"config": older, "betas": [0.0]}, compute, same_lab_key)
    for changed in (
        {"config": dict(config, bon_samples=LabConfig.bon_samples + 1), "betas": [0.0]},  # the new field set
        {"config": dict(config, seed=4), "betas": [0.0]},  # an old field changed
        {"config": config, "betas": [0.1]},  # another part of the key
        {"config": config, "betas": [0.0], "more": 1},
    ):
        before = len(calls)
        cached_result(older_path, changed, compute, same_lab_key)
        assert len(calls) == before + 1, changed
        cached_result(older_path, {"config": older, "betas": [0.0]}, compute, same_lab_key)  # restore the saved key


def test_jobs_split_the_seeds_whole_and_then_read_the_runs_back(tmp_path, monkeypatch):
    """--jobs 2: two processes on shares of the seeds (seed % 2; the same work folder and laboratory cache, compile
    caches of their own; every study, the toy ones included, since they resume too), then the studies over every
    seed in this process; a failed job stops the command."""
    import subprocess

    import experiments.lab.__main__ as lab_main

    started, ran = [], []

    class Process:
        def __init__(self, command, env, cwd, preexec_fn=None):
            started.append((command, env["JAX_COMPILATION_CACHE_DIR"]))

        returncode = 0

        def poll(self):
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", Process)
    for name in ("fig4", "decomposition"):
        monkeypatch.setitem(
            STUDIES, name, lambda seeds, *a, name=name, **k: ran.append((name, seeds)) or {"claims": []}
        )
    work, cache = str(tmp_path / "work"), str(tmp_path / "cache")
    args = ["fig4", "decomposition", "--seeds", "0", "1", "2", "--jobs", "2", "--out", str(tmp_path / "out")]
    assert lab_main.main([*args, "--work", work, "--cache", cache]) == 0
    shares = [command[command.index("--seeds") + 1 : command.index("--out")] for command, _ in started]
    assert shares == [["0", "2"], ["1"]]
    for i, (command, _) in enumerate(started):
        assert command[command.index("--work") + 1] == work and command[command.index("--cache") + 1] == cache
        assert command[command.index("--job") + 1] == f"{i}/2"
        assert command[2:5] == ["experiments.lab", "fig4", "decomposition"]  # the toy studies too: they resume
    assert len({folder for _, folder in started}) == 2
    assert ran == [("fig4", [0, 1, 2]), ("decomposition", [0, 1, 2])]  # every seed, after the jobs
    monkeypatch.setattr(Process, "returncode", 1)
    with pytest.raises(SystemExit, match="failed"):
        lab_main.main([*args, "--work", work, "--cache", cache])


def test_core_runs_the_issues_studies_with_table1_at_the_committed_sweep(tmp_path, monkeypatch):
    """``core``: the studies of lab_main.CORE in that order, in the jobs and the final pass, every process reading
    Table 1's choices from the committed sweep; ``--tuned-from`` names another; a plain study list sweeps."""
    import subprocess

    import experiments.lab.__main__ as lab_main
    from experiments.lab import common

    started, ran = [], []

    class Process:
        def __init__(self, command, env, cwd, preexec_fn=None):
            started.append(command)

        returncode = 0

        def poll(self):
            return self.returncode

    monkeypatch.setattr(subprocess, "Popen", Process)
    monkeypatch.setattr(common, "TUNED_FROM", None)
    for name in STUDIES:
        monkeypatch.setitem(
            STUDIES, name, lambda seeds, *a, name=name, **k: ran.append((name, common.TUNED_FROM)) or {"claims": []}
        )
    folders = ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--cache", str(tmp_path / "c")]
    assert lab_main.main(["core", "--seeds", "0", "1", "--jobs", "2", *folders]) == 0
    assert set(lab_main.CORE) < set(STUDIES) and "design" not in lab_main.CORE
    assert ran == [(name, lab_main.COMMITTED_SWEEP) for name in lab_main.CORE]
    assert os.path.isfile(lab_main.COMMITTED_SWEEP)
    for command in started:
        assert command[2 : 3 + len(lab_main.CORE)] == ["experiments.lab", *lab_main.CORE]
        assert command[command.index("--tuned-from") + 1] == lab_main.COMMITTED_SWEEP
    ran.clear()
    assert lab_main.main(["core", "--seeds", "0", "--tuned-from", "other.json", *folders]) == 0
    assert {swept for _, swept in ran} == {"other.json"}
    ran.clear()
    assert lab_main.main(["inform_table1", "--seeds", "0", *folders]) == 0
    assert ran == [("inform_table1", None)]


def test_a_job_runs_its_share_of_fixed_seeds_then_reads_the_other_jobs_runs_or_leaves_the_study(tmp_path, monkeypatch):
    """A job (--job 1/2) runs its share of a study's fixed seeds (101 of the tuning seeds 100-102) and of its own
    seeds; the study is put back while the other job's runs (100, 102) are missing, taken up after the job's other
    studies, and then waits for them; a study that fails, or whose missing runs' job has exited, is left to the
    final pass."""
    import dataclasses
    import time

    import experiments.lab.__main__ as lab_main
    from experiments.lab import common

    ran, grids, log = [], [], []

    def finish(config, folder):  # what a finished lab run leaves: its config and its summary
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(config), f)
        with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump({"metrics": {}, "seed": config.seed}, f)

    def fake_run_demo(config, folder, cache_dir=None, log=print, with_figures=True):
        ran.append(config.seed)
        finish(config, folder)
        return {"summary": {"metrics": {}, "seed": config.seed}}

    def fails(*args, **kwargs):
        raise RuntimeError("a real error")

    def study(seeds, size, work, cache, out, smoke=False):
        log.append(("energy", common.JOB_WAIT))
        grid = common.run_grid({"s": {}}, [100, 101, 102, *seeds], ("PPO",), size={}, work=work, cache=cache)
        grids.append([summary["seed"] for summary in grid["s"].values()])
        return {"claims": []}

    def other_job(seconds):  # the other job finishes seeds 100 and 102 while this one waits
        from inform_jax.lab.config import LabConfig

        for seed in (100, 102):
            config = LabConfig(seed=seed, methods=("PPO",), bon_samples=0)
            finish(config, str(tmp_path / "w" / "energy" / "s" / f"seed{seed}"))

    monkeypatch.setattr("inform_jax.lab.demo.run_demo", fake_run_demo)
    monkeypatch.setattr(common, "JOB_SHARE", None)
    monkeypatch.setattr(common, "JOB_WAIT", False)
    monkeypatch.setattr(common, "JOBS_DIR", None)
    monkeypatch.setattr(time, "sleep", other_job)
    monkeypatch.setitem(STUDIES, "fig4", fails)
    monkeypatch.setitem(STUDIES, "energy", study)
    monkeypatch.setitem(STUDIES, "detection", lambda *a, **k: log.append(("detection", common.JOB_WAIT)))
    args = ["energy", "fig4", "detection", "--seeds", "1", "3", "--job", "1/2", "--out", str(tmp_path / "o")]
    assert lab_main.main([*args, "--work", str(tmp_path / "w")]) == 0
    assert ran == [101, 1, 3]  # its share only, each once
    assert log == [("energy", False), ("detection", False), ("energy", True)]  # put back, taken up after the rest
    assert grids == [[100, 101, 102, 1, 3]]  # every seed, in order, once the other job's runs were there

    # the other job exited without its runs: the study is left to the final pass instead of waiting for ever
    os.makedirs(lab_main.jobs_dir(str(tmp_path / "w2")))
    open(os.path.join(lab_main.jobs_dir(str(tmp_path / "w2")), "job0"), "w").close()
    monkeypatch.setattr(time, "sleep", lambda seconds: pytest.fail("waited for a run that will not come"))
    ran.clear(), grids.clear()
    assert lab_main.main(["energy", "--seeds", "1", "--job", "1/2", "--out", str(tmp_path / "o2"), "--work",
                          str(tmp_path / "w2")]) == 0  # fmt: skip
    assert ran == [101, 1] and grids == []


def test_compiled_programs_are_released_only_near_the_memory_mapping_limit(monkeypatch):
    import jax

    from inform_jax import compile_cache

    maps = compile_cache.memory_mappings()  # this process's, read from /proc (None off Linux)
    assert maps is None or 0 < maps[0] < maps[1]
    cleared = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(True))
    monkeypatch.setattr(compile_cache, "memory_mappings", lambda: (30_000, 65_530))
    assert not compile_cache.release_programs_near_map_limit() and not cleared
    monkeypatch.setattr(compile_cache, "memory_mappings", lambda: (40_000, 65_530))
    assert compile_cache.release_programs_near_map_limit() and cleared == [True]
    monkeypatch.setattr(compile_cache, "memory_mappings", lambda: None)  # unknown (not Linux): always release
    assert compile_cache.release_programs_near_map_limit() and len(cleared) == 2


def test_compare_runs_counts_kept_verdicts_and_lists_the_moved_ones(tmp_path, capsys):
    from experiments.lab.compare_runs import compare_runs, main

    def write(root, name, claims):
        os.makedirs(root / name)
        claims = [{"claim": c, "verdict": v, "measured": m} for c, v, m in claims]
        (root / name / "study.json").write_text(json.dumps({"claims": claims}))

    old, new = tmp_path / "old", tmp_path / "new"
    write(old, "fig4", [("a", "refuted", "0.1"), ("b", "inconclusive", "0.2"), ("gone", "refuted", "0")])
    write(new, "fig4", [("a", "refuted", "0.11"), ("b", "reproduced", "0.3"), ("added", "refuted", "1")])
    write(new, "only_new", [("c", "refuted", "0")])
    page = compare_runs(str(new), str(old))
    assert "| fig4 | 3 | 2 | 1 | 0 |" in page and "only_new" not in page
    assert "Verdicts that moved (1):" in page and "| fig4 | b | inconclusive: 0.2 | reproduced: 0.3 |" in page
    assert "| fig4 | 3 | 3 | 3 | 3 |" in compare_runs(str(old), str(old))  # a run against itself: every number
    with pytest.raises(SystemExit):  # a folder that is not there: the parser's error names it
        main([str(new), str(tmp_path / "missing")])
    assert f"{tmp_path / 'missing'} is not a folder" in capsys.readouterr().err
