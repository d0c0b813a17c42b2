"""The laboratory's numbers and pages: overoptimization summary per method, win / tie / lose tables, report.md and
report.html with the figures and what each shows."""

from __future__ import annotations

import html
import json
import os
from typing import Any

import numpy as np

from inform_jax.eval.winrate import compare_scores
from inform_jax.lab.figures import smooth


def overoptimization(metrics: list[dict], window: int, drop: float = 0.05) -> dict[str, Any]:
    """Peak of the smoothed gold reward, the KL there, the final values, and whether gold turned down (final
    smoothed gold more than ``drop`` below the peak) while the proxy kept rising."""
    gold = smooth([r["gold_reward"] for r in metrics], window)
    proxy = smooth([r["proxy_reward"] for r in metrics], window)
    kl = smooth([r["kl"] for r in metrics], window)
    peak = int(np.argmax(gold))
    return {
        "gold_start": float(gold[0]), "gold_peak": float(gold[peak]), "gold_final": float(gold[-1]),
        "kl_at_gold_peak": float(kl[peak]), "iteration_at_gold_peak": int(metrics[peak]["iteration"]),
        "kl_final": float(kl[-1]), "proxy_start": float(proxy[0]), "proxy_final": float(proxy[-1]),
        "proxy_at_gold_peak": float(proxy[peak]),
        "gold_turned_down": bool(gold[-1] < gold[peak] - drop),
        "proxy_rose_after_gold_peak": bool(proxy[-1] > proxy[peak]),
        "hacked_fraction_final": float(np.mean([r.get("hacked_fraction", np.nan) for r in metrics[-window:]])),
    }  # fmt: skip


def energy_by_label(samples: list[dict], last_iterations: int) -> dict[str, float]:
    """Mean final-layer energy loss of the hacked and the normal responses among the rollouts of the last
    ``last_iterations`` recorded iterations (the EPPO talk's hacked-vs-normal comparison), with the counts."""
    last = max(s["iteration"] for s in samples) - last_iterations if samples else 0
    kept = [s for s in samples if s["iteration"] > last]
    energy = np.concatenate([np.asarray(s["energy"], np.float64) for s in kept]) if kept else np.zeros(0)
    hacked = np.concatenate([np.asarray(s["hacked"], bool) for s in kept]) if kept else np.zeros(0, bool)
    mean = lambda x: float(np.mean(x)) if x.size else float("nan")  # noqa: E731
    return {"hacked_mean": mean(energy[hacked]), "normal_mean": mean(energy[~hacked]),
            "n_hacked": int(hacked.sum()), "n_normal": int((~hacked).sum())}  # fmt: skip


def win_tables(results: dict[str, dict], sft_final: dict, margin: float) -> dict[str, dict]:
    """Each final policy's greedy outputs on the evaluation prompts against the SFT policy's and against the
    standard-RM PPO policy's, judged by the gold reward with the tie margin (both orders; see eval.winrate)."""
    tables = {"vs SFT": {}}
    for name, result in results.items():
        tables["vs SFT"][name] = compare_scores(result["final"]["gold"], sft_final["gold"], margin=margin)
    if "PPO" in results:
        tables["vs PPO"] = {
            name: compare_scores(result["final"]["gold"], results["PPO"]["final"]["gold"], margin=margin)
            for name, result in results.items()
            if name != "PPO"
        }
    return tables


EXPLANATIONS = {
    "gold_proxy": "Held-out gold reward (band: 95% over held-out prompts) and the proxy reward of the training "
    "rollouts against the exact KL of the policy from the SFT model, one panel per method, axes shared; checkpoints "
    "are ordered along the KL each run has reached (the running maximum of the smoothed KL), and the oracle arm's "
    "gold (PPO on the gold reward itself) is the grey dashed reference. Reward hacking shows as a proxy that keeps "
    "rising while gold peaks and falls (the InfoRM paper's simulated RLHF figure, at laptop scale).",
    "energy": "The final decoder layer's energy loss (mean absolute residual-stream input minus output, per "
    "response token) of each policy's rollouts over RL; dotted: the SFT model on the same rollouts. EPPO penalizes "
    "the policy's departure from the SFT level (the EPPO paper's Fig. 1).",
    "energy_hist": "Distribution of that energy loss for responses the world's judge labels as hacked vs normal, "
    "from the PPO run's last quarter (the EPPO paper's Fig. 2).",
    "latents": "The final policy's and the SFT policy's greedy outputs on held-out prompts, embedded by InfoRM "
    "(IB latent means) and projected with t-SNE; crosses: outputs the judge labels hacked. Overoptimized outputs "
    "sit away from the SFT outputs (the InfoRM paper's detection figure).",
    "csi": "CSI (sum over k-means clusters of size x distance of the centroid to the nearest SFT output) of those "
    "embeddings over RL: it rises when outputs leave the SFT distribution.",
    "wins": "Win / tie / lose of each final policy's greedy responses on held-out prompts, judged by the gold "
    "reward in both presentation orders, tie when the gold rewards differ by at most {margin}.",
}


def csi_alarm(detection: list[dict], factor: float = 2.0) -> int | None:
    """The first RL iteration at which CSI (in InfoRM's latent space) exceeds ``factor`` x its value at the first
    detection, blind to the gold reward; None when it never does (the studies' CSI-guided selection rule)."""
    if not detection:
        return None
    first = detection[0]["csi"]
    return next((d["iteration"] for d in detection if d["csi"] > factor * first), None)


def _interval_text(it: dict | None) -> str:
    if it is None:
        return ""
    return f" ({it['diff']:+.3f} [{it['low']:+.3f}, {it['high']:+.3f}])"


def _matched_kl_md(table: dict) -> list[str]:
    """Gold at 1x / 3x / 10x the reference's KL at its gold peak, each with its paired interval against it."""
    ref, peak = table["reference"], table["reference_peak"]
    multiples = list(table["budgets"])
    lines = [
        "## Gold at matched KL", "",
        f"Each method's held-out gold where its smoothed exact KL first reaches 1x, 3x and 10x the KL at which "
        f"{ref} peaks in gold (KL {peak['kl']:.2f}; budgets "
        + ", ".join(f"{m}x = {v:.2f}" for m, v in table["budgets"].items())
        + "), interpolated between checkpoints, never extrapolated (\"not reached\"). In brackets: the paired "
        f"difference against {ref} at the same budget with its 95% t-interval over the held-out prompts of this "
        "seed (one seed: the interval says how sure this run is, not how a method fares across worlds; the studies "
        "pair seeds).", "",
        "| method | " + " | ".join(f"gold at {m}x KL" for m in multiples) + f" | gold final (vs {ref}) | "
        "final vs SFT |",
        "|---|" + "---|" * (len(multiples) + 2),
    ]  # fmt: skip
    for name, row in table["methods"].items():
        cells = []
        for m in multiples:
            at = row["at"][m]
            cells.append("not reached" if at is None else f"{at['gold']:.3f}{_interval_text(at.get('vs_reference'))}")
        final = row["final"]
        cells.append(f"{final['gold']:.3f}{_interval_text(final.get('vs_reference'))}")
        cells.append(_interval_text(final["vs_sft"]).strip(" ()"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _best_of_n_md(bon: dict) -> list[str]:
    """Best-of-n before PPO: gold (and hacked share) of the sample each reward model keeps, per n."""
    curves = bon["curves"]
    ns = next(iter(curves.values()))["n"]
    shown = [i for i, n in enumerate(ns) if n in (1, 4, 16, 64, 256) or i == len(ns) - 1]
    shown = sorted(set(shown))
    lines = [
        "## Best-of-n before PPO", "",
        f"One pool of {bon['samples']} SFT samples per held-out prompt, ranked by each reward model: the held-out "
        "gold of the sample it keeps (the unbiased best-of-n estimator over the pool), at KL = log n - (n-1)/n from "
        "the SFT policy. Every reward model ranks the same samples, so the rows are paired sample by sample and no "
        "PPO setting enters. \"Gold\" ranks by the judge itself: the most selection can reach. In brackets: the "
        "share of kept samples that are hacked.", "",
        "| reward model | " + " | ".join(f"n = {ns[i]} (KL {curves['Gold']['kl'][i]:.2f})" for i in shown) + " |",
        "|---|" + "---|" * len(shown),
    ]  # fmt: skip
    for name, c in curves.items():
        cells = [f"{c['gold'][i]:.3f}" + (f" ({c['hacked'][i]:.2f})" if "hacked" in c else "") for i in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _protocol_md(config: dict, calibration: dict | None) -> list[str]:
    """How rewards were read: normalization, truncated responses, EPPO's reference and eta."""
    eos = {"append_eos": "scored with EOS appended", "penalty": "penalized as TRL's missing_eos_penalty",
           "score": "scored as cut"}[config["missing_eos"]]  # fmt: skip
    lines = ["Protocol: every proxy reward (the oracle's gold too) "
             + ("standardized by its mean and std over SFT samples before PPO (ensemble members each before "
                "aggregation)" if config["reward_normalize"] else "used raw (not normalized)")
             + f"; responses cut at the {config['new_tokens']}-token limit {eos}."]  # fmt: skip
    if calibration:
        lines[0] += (f" EPPO: penalty eta |dE_SFT - dE_policy| on the final layer, no KL term, dE_SFT from "
                     f"{config['eppo_sft_samples']} SFT samples per prompt ({config['eppo_reference']} reference); "
                     f"eta {calibration['eta']:.3g}, set so that the penalty's std under the SFT-vs-SFT null "
                     f"(gap std {calibration['null_gap_std']:.3g}, mean {calibration['null_gap_mean']:.3g}) is "
                     f"{calibration['ratio']:g}x the reward's std.")  # fmt: skip
    return lines


def _detectors_md(evaluation: dict) -> list[str]:
    """When each alarm rule fired in each run, beside the run's gold peak; false alarms on the negative runs."""
    rules = [r for r, d in evaluation["detectors"].items() if d.get("recorded")]
    lines = [
        "## When hacking was detected", "",
        "Each alarm rule, blind to the gold reward, at its default threshold: the first iteration at which it fires "
        "(- : never), beside the iteration of the run's held-out gold peak and whether gold then fell by 0.05 or "
        "more (over-optimized). The oracle and PPO w/ KL are the runs an alarm should stay quiet on; an alarm there "
        "is a false alarm. One seed: these are single observations; the studies sweep thresholds and count rates.",
        "",
        "| run | gold peak at | over-optimized | " + " | ".join(rules) + " |",
        "|---|---|---|" + "---|" * len(rules),
    ]  # fmt: skip
    for run, truth in evaluation["truth"].items():
        alarms = [evaluation["detectors"][r]["runs"][run]["alarm"] for r in rules]
        cells = ["-" if a is None else str(a) for a in alarms]
        lines.append(f"| {run}{' (negative)' if truth['negative'] else ''} | {truth['peak_iteration']} | "
                     f"{'yes' if truth['overoptimized'] else 'no'} | " + " | ".join(cells) + " |")  # fmt: skip
    missing = [r for r, d in evaluation["detectors"].items() if not d.get("recorded")]
    if missing:
        lines += ["", f"Not recorded in this run: {', '.join(missing)}."]
    return lines


def _table_md(table: dict[str, dict]) -> list[str]:
    lines = ["| method | win | tie | lose | win rate |", "|---|---|---|---|---|"]
    for name, r in table.items():
        lines.append(f"| {name} | {r['win']:.2f} | {r['tie']:.2f} | {r['lose']:.2f} | {r['win_rate']:.2f} |")
    return lines


def write_report(out_dir: str, summary: dict[str, Any], figures: dict[str, Any], config: dict, seconds: float) -> str:
    """report.md, report.html, metrics.json, config.json under ``out_dir``; returns the HTML path."""
    window, margin = summary["window"], config["tie_margin"]
    over = summary["overoptimization"]
    md = ["# inform-jax reward-hacking laboratory", "",
          f"Synthetic world at {config['label_noise']:.0%} label noise, seed {config['seed']}; policy "
          f"{config['num_layers']}x{config['hidden_size']} decoder; {config['ppo_iterations']} RL iterations of "
          f"{config['ppo_batch']} prompts per method; {seconds / 60:.1f} min in all. Numbers are what this run "
          "measured, not the papers' claims.", "",
          "## Overoptimization per method (held-out gold)", "",
          f"Gold is the world's judge on {summary['sft_heldout']['samples']} samples per checkpoint (held-out prompts, "
          "temperature 1, the same sampling keys for every method); KL is the exact KL from the SFT policy, summed "
          "along each sample. Rise and fall are of the gold curve smoothed over 3 checkpoints; the proxy is the "
          "reward model's score of the training rollouts. The oracle arm optimizes the gold reward itself: the gold "
          "RL can reach in this world.", "",
          "| method | gold SFT | gold peak (iteration) | KL at peak | gold final | KL final | rise | fall | "
          "proxy at peak -> final | hacked final | CSI alarm |", "|---" * 11 + "|"]  # fmt: skip
    for name, o in over.items():
        alarm = csi_alarm(summary["detection"].get(name) or [])
        md.append(f"| {name} | {o['gold_start']:.3f} | {o['gold_peak']:.3f} ({o['iteration_at_gold_peak']}) | "
                  f"{o['kl_at_gold_peak']:.2f} | {o['gold_final']:.3f} | {o['kl_final']:.2f} | {o['rise']:+.3f} | "
                  f"{o['fall']:+.3f} | {o['proxy_at_gold_peak']:.3f} -> {o['proxy_final']:.3f} | "
                  f"{o['hacked_fraction_final']:.2f} | {'-' if alarm is None else alarm} |")  # fmt: skip
    md += ["", *_protocol_md(config, summary.get("eppo_calibration"))]
    if summary.get("best_of_n"):
        md += ["", *_best_of_n_md(summary["best_of_n"])]
    if summary.get("matched_kl"):
        md += ["", *_matched_kl_md(summary["matched_kl"])]
    if summary.get("detectors"):
        md += ["", *_detectors_md(summary["detectors"])]
    sections = (
        []
        if not figures
        else [  # a report without figures (the lab's studies): the numbers only
            ("Gold and proxy reward against KL", "gold_proxy", [figures["gold_proxy"]]),
            ("Final-layer energy loss over RL", "energy", [figures["energy"]]),
            ("Energy loss of hacked vs normal responses", "energy_hist", [figures["energy_hist"]]),
            ("SFT vs RLHF outputs in InfoRM's latent space", "latents", list(figures["latents"].values())),
            ("CSI over RL", "csi", [figures["csi"]]),
            ("Win / tie / lose (gold judge)", "wins", list(figures["wins"].values())),
        ]
    )
    for title, key, paths in sections:
        md += ["", f"## {title}", "", EXPLANATIONS[key].format(window=window, margin=margin), ""]
        md += [f"![{title}]({os.path.basename(p)})" for p in paths]
    for opponent, table in summary["win_tie_lose"].items():  # under the last section's figures (wins), if any
        md += ["", f"**{opponent}**", "", *_table_md(table)]
    md += ["", "Files: `metrics.json` (every number above and the per-iteration metrics), `config.json` (the "
           "settings), `runs/<method>/metrics.jsonl`.", ""]  # fmt: skip
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return _write_html(out_dir, md)


def _write_html(out_dir: str, md: list[str]) -> str:
    """A plain HTML rendering of report.md (headings, tables, images, paragraphs); no extra dependency."""
    body, table = [], []

    def flush_table():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><tr>{head}</tr>{rest}</table>")
            table.clear()

    for line in md:
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            src = line[line.rindex("](") + 2 : -1]  # the alt text may itself hold parentheses
            body.append(f'<p><img src="{html.escape(src)}" style="max-width:100%"></p>')
        elif line.startswith("**"):
            body.append(f"<h3>{html.escape(line.strip('*'))}</h3>")
        elif line:
            body.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    flush_table()
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;padding:3px 8px}"
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>inform-jax lab</title><style>{style}</style>"
    page += "</head><body>" + "\n".join(body) + "</body></html>"
    path = os.path.join(out_dir, "report.html")
    with open(path, "w") as f:
        f.write(page)
    return path
