"""Convert AlpacaFarm preference files (instruction, input, output_1, output_2, preference) to the
`prompt` / `chosen` / `rejected` JSONL format that `inform-jax train-rm` reads.

    python experiments/rm/convert_alpacafarm.py alpaca_human_preference.json /data/alpacafarm/train.jsonl

A row whose `preference` is not 1 or 2 stops the conversion with its index (nothing is dropped silently).
The format itself lives in `inform_jax.data.formats` (shared with the detection and simulated-RLHF studies).
"""

import sys

from inform_jax.data.formats import alpacafarm_pair, convert_pairs


def convert_row(row: dict, index: int) -> dict:
    return alpacafarm_pair(row, f"row {index}")


def main(source: str, target: str) -> None:
    count = convert_pairs("alpacafarm", source, target)
    print(f"{count} pairs written to {target}")


if __name__ == "__main__":
    main(*sys.argv[1:])
