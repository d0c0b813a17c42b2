"""Convert TL;DR comparisons (OpenAI's summarize-from-feedback `comparisons/batch*.json` lines: info {subreddit,
title, post}, summaries [2 x {text}], choice) to `prompt` / `chosen` / `rejected` JSONL for `inform-jax train-rm`,
and optionally the distinct prompts to a prompt file for `inform-jax ppo`.

    python experiments/rm/convert_tldr.py comparisons.jsonl /data/tldr/train.jsonl --prompts /data/tldr/prompts.jsonl

A row whose `choice` is not 0 or 1, or without a post, stops the conversion with its file and row.
"""

import argparse
import json
import sys

from inform_jax.data.formats import convert_pairs, read_dataset_prompts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="comparisons file (.json / .jsonl)")
    parser.add_argument("target", help="pairs JSONL to write")
    parser.add_argument("--prompts", help="also write the distinct prompts (JSONL, column prompt) here")
    args = parser.parse_args(argv)
    count = convert_pairs("tldr", args.source, args.target)
    print(f"{count} pairs written to {args.target}")
    if args.prompts:
        prompts, counts = read_dataset_prompts("tldr", args.source)
        with open(args.prompts, "w") as f:
            for prompt in prompts:
                f.write(json.dumps({"prompt": prompt}) + "\n")
        print(f"{counts['prompts']} prompts ({counts['duplicates']} repeated rows) written to {args.prompts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
