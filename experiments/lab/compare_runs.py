"""Two runs of the lab's studies side by side, claim by claim: which verdicts a rerun keeps and which it moves.

    python -m experiments.lab.compare_runs NEW_RESULTS [OLD_RESULTS] > COMPARISON.md

NEW_RESULTS and OLD_RESULTS are results folders of ``python -m experiments.lab`` (one ``<study>/study.json`` each;
OLD_RESULTS defaults to the committed experiments/lab/results). Only the studies in both are compared. "same
numbers" counts the claims whose measurement is the same text in both runs: a rerun of the same code from a cold
cache reproduces every one (the lab is deterministic), so any other count says the code or the machine changed a
result.
"""

from __future__ import annotations

import argparse
import json
import os

from experiments.lab.common import RESULTS


def compare_runs(new: str, old: str = RESULTS) -> str:
    """A markdown page: per study the claims, how many keep their verdict, and a row per claim whose verdict moved
    with both measurements."""
    studies = sorted(n for n in os.listdir(new) if os.path.isfile(os.path.join(old, n, "study.json"))
                     and os.path.isfile(os.path.join(new, n, "study.json")))  # fmt: skip
    counts, moved = [], []
    for name in studies:
        with open(os.path.join(new, name, "study.json")) as f, open(os.path.join(old, name, "study.json")) as g:
            after, before = json.load(f), json.load(g)
        earlier = {c["claim"]: c for c in before["claims"]}
        matched = [(earlier[c["claim"]], c) for c in after["claims"] if c["claim"] in earlier]
        kept = sum(b["verdict"] == a["verdict"] for b, a in matched)
        same = sum(b["measured"] == a["measured"] for b, a in matched)
        counts.append(f"| {name} | {len(after['claims'])} | {len(matched)} | {kept} | {same} |")
        moved += [f"| {name} | {a['claim']} | {b['verdict']}: {b['measured']} | {a['verdict']}: {a['measured']} |"
                  for b, a in matched if b["verdict"] != a["verdict"]]  # fmt: skip
    return "\n".join([
        f"# {new} against {old}", "",
        "| study | claims | in both | same verdict | same numbers |", "|---|---|---|---|---|", *counts, "",
        f"Verdicts that moved ({len(moved)}):", "",
        "| study | claim | before | after |", "|---|---|---|---|", *[row.replace("\n", " ") for row in moved], "",
    ])  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", metavar="NEW_RESULTS", help="a results folder (<study>/study.json)")
    parser.add_argument("old", metavar="OLD_RESULTS", nargs="?", default=RESULTS,
                        help="the folder to compare with (default: the committed experiments/lab/results)")  # fmt: skip
    args = parser.parse_args(argv)
    for folder in (args.new, args.old):
        if not os.path.isdir(folder):
            parser.error(f"{folder} is not a folder")
    print(compare_runs(args.new, args.old))


if __name__ == "__main__":
    main()
