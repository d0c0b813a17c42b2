"""Convert AlpacaFarm preference files (instruction, input, output_1, output_2, preference) to the
`prompt` / `chosen` / `rejected` JSONL format that `inform-jax train-rm` reads.

    python experiments/rm/convert_alpacafarm.py alpaca_human_preference.json /data/alpacafarm/train.jsonl

A row whose `preference` is not 1 or 2 stops the conversion with its index (nothing is dropped silently).
"""

import json
import sys

PROMPT = "Below is an instruction that describes a task{with_input}. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n{input_block}### Response:\n"  # noqa: E501


def convert_row(row: dict, index: int) -> dict:
    if row.get("preference") not in (1, 2):
        raise ValueError(f"row {index}: preference must be 1 or 2, got {row.get('preference')!r}")
    has_input = bool(row.get("input"))
    prompt = PROMPT.format(
        with_input=", paired with an input that provides further context" if has_input else "",
        instruction=row["instruction"],
        input_block=f"### Input:\n{row['input']}\n\n" if has_input else "",
    )
    first, second = row["output_1"], row["output_2"]
    chosen, rejected = (first, second) if row["preference"] == 1 else (second, first)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def main(source: str, target: str) -> None:
    with open(source) as f:
        rows = json.load(f) if source.endswith(".json") else [json.loads(line) for line in f if line.strip()]
    with open(target, "w") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps(convert_row(row, i)) + "\n")
    print(f"{len(rows)} pairs written to {target}")


if __name__ == "__main__":
    main(*sys.argv[1:])
