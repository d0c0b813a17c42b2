"""Write the distinct prompts of a dataset file in its released format as a prompt file (JSONL, column `prompt`)
for `inform-jax ppo` and `inform-jax generate`.

    python experiments/prompts.py alpacafarm alpaca_farm_evaluation.json /data/alpacafarm/prompts.jsonl
    python experiments/prompts.py tldr comparisons.jsonl /data/tldr/prompts.jsonl
    python experiments/prompts.py falseqa test.csv prompts.jsonl --template raw

Datasets: alpacafarm, tldr, falseqa, flan, helpsteer (see inform_jax.data.formats). A malformed row stops with its
file and row; repeated prompts are written once and counted.
"""

import argparse
import json
import sys

from inform_jax.data.formats import PROMPT_READERS, read_dataset_prompts


def write_prompts(prompts: list[str], target: str) -> str:
    with open(target, "w") as f:
        for prompt in prompts:
            f.write(json.dumps({"prompt": prompt}) + "\n")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(PROMPT_READERS))
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--template", default="alpaca", choices=["alpaca", "raw"],
                        help="FalseQA / Flan / HelpSteer questions as Alpaca instructions or raw")  # fmt: skip
    args = parser.parse_args(argv)
    prompts, counts = read_dataset_prompts(args.dataset, args.source, template=args.template)
    write_prompts(prompts, args.target)
    print(f"{counts['prompts']} prompts ({counts['duplicates']} repeated rows) written to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
