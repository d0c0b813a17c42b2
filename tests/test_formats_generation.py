"""Dataset formats (AlpacaFarm, TL;DR, FalseQA, Flan, HelpSteer), generation from a checkpoint folder, and the
text gold reward that simulated RLHF logs."""

import json
import os

import numpy as np
import pytest
from flax import nnx

from inform_jax.cli import main
from inform_jax.data.formats import (
    DatasetFormatError,
    alpaca_prompt,
    convert_pairs,
    read_dataset_prompts,
    tldr_pair,
)
from inform_jax.data.preference import load_responses
from inform_jax.data.testing import make_word_tokenizer
from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.eval.generation import decode_rows, generate_responses
from inform_jax.models import CausalLM, DecoderConfig, save_pretrained
from inform_jax.models.sampler import generate
from inform_jax.train.ppo.gold import text_gold_fn

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_tldr_pairs_follow_choice_and_keep_the_summary_text(tmp_path):
    rows = [json.loads(line) for line in open(os.path.join(FIXTURES, "tldr_comparisons.jsonl"))]
    count = convert_pairs("tldr", os.path.join(FIXTURES, "tldr_comparisons.jsonl"), str(tmp_path / "p.jsonl"))
    pairs = [json.loads(line) for line in open(tmp_path / "p.jsonl")]
    assert count == len(rows) == len(pairs)
    for row, pair in zip(rows, pairs, strict=True):
        assert pair["chosen"] == row["summaries"][row["choice"]]["text"]
        assert pair["rejected"] == row["summaries"][1 - row["choice"]]["text"]
        assert pair["prompt"].startswith(f"SUBREDDIT: r/{row['info']['subreddit']}") and pair["prompt"].endswith(
            "TL;DR:"
        )
        assert row["info"]["post"] in pair["prompt"]
    with pytest.raises(DatasetFormatError, match="x.jsonl: row 3: choice must be 0 or 1"):
        tldr_pair({**rows[0], "choice": 2}, "x.jsonl: row 3")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "summaries": rows[1]["summaries"][:1]}) + "\n")
    with pytest.raises(DatasetFormatError, match="bad.jsonl: row 1: 'summaries'"):
        convert_pairs("tldr", str(bad), str(tmp_path / "out.jsonl"))


@pytest.mark.parametrize(
    "dataset,file,column",
    [("alpacafarm", "alpacafarm_eval.json", "instruction"), ("falseqa", "falseqa.csv", "question"),
     ("flan", "flan.jsonl", "inputs"), ("helpsteer", "helpsteer.jsonl", "prompt")],
)  # fmt: skip
def test_prompt_readers_read_each_released_format(dataset, file, column):
    from inform_jax.data.formats import read_records

    rows = read_records(os.path.join(FIXTURES, file))
    raw, counts = read_dataset_prompts(dataset, os.path.join(FIXTURES, file), template="raw")
    distinct = list(dict.fromkeys(r[column] for r in rows))
    assert counts == {"rows": len(rows), "prompts": len(distinct), "duplicates": len(rows) - len(distinct)}
    if dataset == "alpacafarm":  # already instructions: always the Alpaca prompt, with the input block
        assert raw == [alpaca_prompt(r["instruction"], r["input"]) for r in rows]
        assert "### Input:\nThe cat sleeps" in raw[1]
    else:
        assert raw == distinct
        wrapped, _ = read_dataset_prompts(dataset, os.path.join(FIXTURES, file))
        assert wrapped == [alpaca_prompt(q) for q in distinct]


def test_prompt_readers_name_the_file_and_row(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"inputs": "a"}\n{"targets": "b"}\n')
    with pytest.raises(DatasetFormatError, match=r"f.jsonl: row 1: field 'inputs'"):
        read_dataset_prompts("flan", str(path))
    path.write_text('{"inputs": "a"}\nnot json\n')
    with pytest.raises(DatasetFormatError, match="f.jsonl: line 2 is not JSON"):
        read_dataset_prompts("flan", str(path))
    with pytest.raises(ValueError, match="dataset must be one of"):
        read_dataset_prompts("squad", str(path))


@pytest.fixture(scope="module")
def policy_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy")
    words = "the a cat dog sat ran on under mat log fast slow and".split()
    make_word_tokenizer(folder, words, chat_template=False)
    tok = load_tokenizer(str(folder))
    config = DecoderConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id)  # fmt: skip
    save_pretrained(CausalLM(config, rngs=nnx.Rngs(0)), str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


PROMPTS = ["the cat sat on", "a dog ran", "the mat", "a log and the cat ran under", "slow dog"]


def test_generation_matches_the_sampler_and_does_not_depend_on_batching(policy_folder):
    from inform_jax.data.tokenize import tokenize_prompts
    from inform_jax.models import from_pretrained

    policy, tok = from_pretrained(policy_folder), load_tokenizer(policy_folder)
    by_two = generate_responses(policy, tok, PROMPTS, max_new_tokens=5, batch_size=2)
    whole = generate_responses(policy, tok, PROMPTS, max_new_tokens=5, batch_size=8)
    assert by_two == whole and len(whole) == len(PROMPTS)
    arrays, _ = tokenize_prompts(PROMPTS, tok, "auto")
    out = generate(policy, arrays["input_ids"], arrays["attention_mask"], max_new_tokens=5, greedy=True,
                   eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)  # fmt: skip
    direct = decode_rows(tok, np.asarray(out.tokens), np.asarray(out.mask))
    assert whole == direct
    sampled = generate_responses(policy, tok, PROMPTS, max_new_tokens=5, greedy=False, seed=1)
    assert sampled == generate_responses(policy, tok, PROMPTS, max_new_tokens=5, greedy=False, seed=1)
    with pytest.raises(ValueError, match="no prompts"):
        generate_responses(policy, tok, [], max_new_tokens=5)


def test_generate_cli_writes_a_responses_file(policy_folder, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "responses.jsonl"
    args = ["generate", "--policy", policy_folder, "--prompts", str(prompts), "--out", str(out)]
    assert main([*args, "--max-new-tokens", "4", "--limit", "3"]) == 0
    rows, _ = load_responses(str(out))
    assert [r.prompt for r in rows] == PROMPTS[:3]
    assert all(len(r.response.split()) <= 4 for r in rows)


def test_text_gold_fn_scores_decoded_prompts_and_responses(policy_folder):
    tok = load_tokenizer(policy_folder)
    seen = {}

    def scores(prompts, responses):
        seen["rows"] = list(zip(prompts, responses, strict=True))
        return [len(r.split()) - 0.5 * len(p.split()) for p, r in seen["rows"]]

    ids = tok.convert_tokens_to_ids
    prompt_ids = np.array([[0, 0, 1, ids("cat")], [1, *ids(["a", "dog", "ran"])]])
    prompt_mask = (prompt_ids != 0).astype(np.int32)
    response_ids = np.array([[*ids(["sat", "on", "mat"]), 2], [*ids(["fast", "and", "slow"]), 0]])
    response_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    gold = text_gold_fn(scores, tok)(prompt_ids, prompt_mask, response_ids, response_mask)
    assert seen["rows"] == [("cat", "sat on mat"), ("a dog ran", "fast and")]
    np.testing.assert_allclose(gold, [3 - 0.5, 2 - 1.5])
