"""The public datasets' own file formats, turned into what the trainers read.

Preference files become ``prompt`` / ``chosen`` / ``rejected`` rows (``inform-jax train-rm`` format "prompt"):

- AlpacaFarm human / simulated preferences: ``instruction``, ``input``, ``output_1``, ``output_2``,
  ``preference`` (1 or 2), rendered with the Alpaca prompt that AlpacaFarm's SFT models were trained on.
- TL;DR (OpenAI's summarize-from-feedback comparisons): ``info`` {``subreddit``, ``title``, ``post``},
  ``summaries`` [2 x {``text``}], ``choice`` (0 or 1), rendered as "SUBREDDIT / TITLE / POST / TL;DR:".

Prompt sources for generation (the InfoRM paper's CSI study answers prompts of AlpacaFarm, FalseQA, Flan and
HelpSteer), each in its released format: :func:`read_dataset_prompts`. A malformed row raises with the file and
row; nothing is dropped silently (duplicate prompts, e.g. HelpSteer's several responses per prompt, are kept
once and the count is reported).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

ALPACA_PROMPT = (
    "Below is an instruction that describes a task{with_input}. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
)


class DatasetFormatError(ValueError):
    """A row that does not match its dataset's format; the message names the file and the row."""


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca / AlpacaFarm prompt for an instruction and an optional input."""
    return ALPACA_PROMPT.format(
        with_input=", paired with an input that provides further context" if input else "",
        instruction=instruction,
        input_block=f"### Input:\n{input}\n\n" if input else "",
    )


def tldr_prompt(subreddit: str, title: str, post: str) -> str:
    """The TL;DR summarization prompt (the format of the summarize-from-feedback SFT and PPO prompts)."""
    return f"SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"


def _field(row: Mapping[str, Any], key: str, where: str, kind=str) -> Any:
    value = row.get(key) if isinstance(row, Mapping) else None
    if not isinstance(value, kind) or (kind is str and not value.strip() and key != "input"):
        raise DatasetFormatError(f"{where}: field '{key}' should be a non-empty {kind.__name__}, got {value!r}")
    return value


def alpacafarm_pair(row: Mapping[str, Any], where: str) -> dict[str, str]:
    """One AlpacaFarm preference row -> {"prompt", "chosen", "rejected"}."""
    if not isinstance(row, Mapping) or row.get("preference") not in (1, 2):
        got = row.get("preference") if isinstance(row, Mapping) else row
        raise DatasetFormatError(f"{where}: preference must be 1 or 2, got {got!r}")
    prompt = alpaca_prompt(_field(row, "instruction", where), row.get("input") or "")
    first, second = _field(row, "output_1", where), _field(row, "output_2", where)
    chosen, rejected = (first, second) if row["preference"] == 1 else (second, first)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def tldr_pair(row: Mapping[str, Any], where: str) -> dict[str, str]:
    """One TL;DR comparison row -> {"prompt", "chosen", "rejected"} (summaries keep their leading space)."""
    info = _field(row, "info", where, dict)
    summaries = _field(row, "summaries", where, list)
    if len(summaries) != 2 or not all(isinstance(s, Mapping) and isinstance(s.get("text"), str) for s in summaries):
        raise DatasetFormatError(f"{where}: 'summaries' should be two {{'text': ...}} entries, got {summaries!r}")
    choice = row.get("choice")
    if choice not in (0, 1):
        raise DatasetFormatError(f"{where}: choice must be 0 or 1, got {choice!r}")
    post = info.get("post") or info.get("article")  # the CNN/DM part of the release has "article"
    if not isinstance(post, str) or not post.strip():
        raise DatasetFormatError(f"{where}: info has no 'post' (or 'article') text")
    prompt = tldr_prompt(info.get("subreddit") or "", info.get("title") or "", post)
    return {"prompt": prompt, "chosen": summaries[choice]["text"], "rejected": summaries[1 - choice]["text"]}


PAIR_CONVERTERS: dict[str, Callable[[Mapping[str, Any], str], dict[str, str]]] = {
    "alpacafarm": alpacafarm_pair,
    "tldr": tldr_pair,
}


def read_records(path: str) -> list[Any]:
    """Rows of a .json (a list), .jsonl or .csv file, as parsed; a bad JSON line names its line number."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, newline="" if path.endswith(".csv") else None, encoding="utf-8") as f:
        if path.endswith(".csv"):
            return list(csv.DictReader(f))
        if path.endswith(".json"):
            rows = json.load(f)
            if not isinstance(rows, list):
                raise DatasetFormatError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
            return rows
        rows = []
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DatasetFormatError(f"{path}: line {number} is not JSON ({err})") from err
        return rows


def convert_pairs(dataset: str, source: str, target: str) -> int:
    """Convert a preference file of ``dataset`` (see PAIR_CONVERTERS) to prompt/chosen/rejected JSONL."""
    if dataset not in PAIR_CONVERTERS:
        raise ValueError(f"dataset must be one of {sorted(PAIR_CONVERTERS)}, got {dataset!r}")
    pairs = [PAIR_CONVERTERS[dataset](row, f"{source}: row {i}") for i, row in enumerate(read_records(source))]
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w") as f:
        for pair in pairs:
            f.write(json.dumps(pair) + "\n")
    return len(pairs)


def _alpacafarm_prompt(row, where):
    return alpaca_prompt(_field(row, "instruction", where), row.get("input") or "")


def _tldr_prompt(row, where):
    if "info" in row:  # a comparison row
        return tldr_pair(row, where)["prompt"]
    return tldr_prompt(row.get("subreddit") or "", row.get("title") or "", _field(row, "post", where))


def _falseqa_prompt(row, where):
    return _field(row, "question", where)


def _flan_prompt(row, where):
    return _field(row, "inputs", where)


def _helpsteer_prompt(row, where):
    return _field(row, "prompt", where)


PROMPT_READERS: dict[str, Callable[[Mapping[str, Any], str], str]] = {
    "alpacafarm": _alpacafarm_prompt,  # alpaca_farm_evaluation.json: instruction, input
    "falseqa": _falseqa_prompt,  # FalseQA csv: question, answer, label
    "flan": _flan_prompt,  # Flan collection jsonl: inputs, targets, task_name ...
    "helpsteer": _helpsteer_prompt,  # HelpSteer jsonl: prompt, response, helpfulness ... (prompts repeat)
    "tldr": _tldr_prompt,  # TL;DR posts (subreddit, title, post) or comparison rows
}
INSTRUCTION_DATASETS = ("falseqa", "flan", "helpsteer")  # plain questions: the template decides their rendering


def read_dataset_prompts(dataset: str, path: str, *, template: str = "alpaca") -> tuple[list[str], dict[str, int]]:
    """The distinct prompts of a ``dataset`` file in its released format, in file order; returns (prompts,
    counts {"rows", "prompts", "duplicates"}). ``template``: "alpaca" renders FalseQA / Flan / HelpSteer
    questions as Alpaca instructions (what an AlpacaFarm SFT policy expects), "raw" keeps them as they are."""
    if dataset not in PROMPT_READERS:
        raise ValueError(f"dataset must be one of {sorted(PROMPT_READERS)}, got {dataset!r}")
    if template not in ("alpaca", "raw"):
        raise ValueError(f"template must be 'alpaca' or 'raw', got {template!r}")
    rows = read_records(path)
    prompts: dict[str, None] = {}
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        if not isinstance(row, Mapping):
            raise DatasetFormatError(f"{where}: expected an object, got {type(row).__name__}")
        prompt = PROMPT_READERS[dataset](row, where)
        if dataset in INSTRUCTION_DATASETS and template == "alpaca":
            prompt = alpaca_prompt(prompt)
        prompts.setdefault(prompt)
    if not prompts:
        raise DatasetFormatError(f"{path}: no rows")
    counts = {"rows": len(rows), "prompts": len(prompts), "duplicates": len(rows) - len(prompts)}
    return list(prompts), counts
