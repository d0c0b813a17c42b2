"""`python -m benchmarks`: runs a script in its own process, reads its result, and tabulates ratios and targets."""

import json

from benchmarks.__main__ import _overhead, _row, main, markdown_table


def test_rows_compute_ratios_and_targets():
    fast, slow = _row("a", "tokens/s", 300.0, 100.0, 1.5), _row("b", "tokens/s", 100.0, 300.0, 1.5)
    assert fast["ratio"] == 3.0 and fast["met"] and not slow["met"]
    assert _row("c", "tokens/s", 1.0, None)["ratio"] is None  # no peer: no ratio, no verdict
    assert _overhead("d", 1.0, 2.0)["met"] and not _overhead("e", 2.5, 2.0)["met"]
    table = markdown_table([fast, slow])
    assert "| yes |" in table and "| **no** |" in table and ">= 1.5x" in table


def test_runner_runs_a_script_and_writes_the_summary(tmp_path):
    assert main(["--quick", "--only", "kmeans", "--out", str(tmp_path)]) == 0
    (summary,) = [p for p in tmp_path.glob("cpu-*.json")]
    result = json.loads(summary.read_text())
    (row,) = result["rows"]
    assert row["workload"].startswith("k-means 2000x8") and row["ratio"] > 0 and row["target"] == 2.0
    assert result["results"]["kmeans"]["n"] == 2000  # the script's own result, as written to --out
    assert (tmp_path / summary.name.replace(".json", ".md")).read_text().count("| k-means") == 1
