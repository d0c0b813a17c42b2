"""Preference / prompt file loading (three formats, three file types), row validation and tokenization."""

import json
import os

import numpy as np
import pytest

from inform_jax.data.preference import (
    PreferenceDataError,
    PreferencePair,
    load_preferences,
    load_prompts,
    read_rows,
    split_hh,
)
from inform_jax.data.testing import make_word_tokenizer
from inform_jax.data.tokenize import fit_to_length, resolve_max_length, tokenize_pairs, tokenize_prompts

SUFFIXES = ["jsonl", "json", "parquet"]
WORDS = "Human Assistant : ? . , hi hello how are you fine good bad ok no yes well sure".split()
WORDS += [f"w{i}" for i in range(200)]


def write_rows(path, rows):
    """Write rows as JSONL, a JSON list, or Parquet, by the path's suffix."""
    path = str(path)
    if path.endswith(".jsonl"):
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    elif path.endswith(".json"):
        with open(path, "w") as f:
            json.dump(rows, f)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(make_word_tokenizer(tmp_path_factory.mktemp("tok"), WORDS))


@pytest.fixture
def load(tmp_path):
    """load_preferences (no cache of any kind: each call reads the file's current bytes)."""

    def _load(path, **kw):
        return load_preferences(path, **kw)

    return _load


def ids(tok, text):
    """Reference ids: word pieces looked up directly, independent of the code under test."""
    return tok.convert_tokens_to_ids(text.replace(":", " :").replace("?", " ?").split())


# ------------------------------------------------------------------------------------------------ formats

HH_ROWS = [
    {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello",
        "rejected": "\n\nHuman: hi\n\nAssistant: no",
        "subset": "helpful",
    },
    {  # multi-turn, and both replies start alike: the prompt must stop at the last Assistant tag
        "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine good",
        "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine bad",
        "subset": "harmless",
    },
]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_hh_format(tmp_path, load, suffix):
    path = write_rows(tmp_path / f"hh.{suffix}", HH_ROWS)
    pairs, report = load(path)
    assert report.format == "hh" and (report.rows_read, report.rows_kept, report.skipped) == (2, 2, {})
    assert pairs[0] == PreferencePair(
        "\n\nHuman: hi\n\nAssistant:", " hello", " no", source=path, row=0, extra={"subset": "helpful"}
    )
    assert pairs[1].prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:"
    assert (pairs[1].chosen, pairs[1].rejected, pairs[1].row) == (" fine good", " fine bad", 1)
    assert pairs[1].extra == {"subset": "harmless"}


def test_split_hh_multi_turn():
    base = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:"
    assert split_hh(base + " same x", base + " same y") == (base, " same x", " same y")
    # Divergence inside an earlier turn: the prompt is cut back to the last tag before it.
    chosen = "\n\nHuman: a\n\nAssistant: b1\n\nHuman: c\n\nAssistant: d"
    rejected = "\n\nHuman: a\n\nAssistant: b2\n\nHuman: c\n\nAssistant: d"
    prompt = "\n\nHuman: a\n\nAssistant:"
    assert split_hh(chosen, rejected) == (prompt, chosen[len(prompt) :], rejected[len(prompt) :])
    assert split_hh(chosen, rejected)[1].startswith(" b1\n\nHuman: c")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_prompt_format(tmp_path, load, suffix):
    rows = [
        {"prompt": "how are you?", "chosen": " fine", "rejected": " bad", "hacked": False, "margin": 1.5},
        {"prompt": "hi", "chosen": " hello", "rejected": " no", "hacked": True, "margin": 0.5},
    ]
    path = write_rows(tmp_path / f"p.{suffix}", rows)
    pairs, report = load(path)
    assert report.format == "prompt" and report.rows_kept == 2
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("how are you?", " fine", " bad"),
        ("hi", " hello", " no"),
    ]
    assert pairs[1].extra == {"hacked": True, "margin": 0.5}


def msg(role, content):
    return {"role": role, "content": content}


MESSAGE_ROWS = [
    {
        "chosen": [
            msg("user", "hi"),
            msg("assistant", "hello"),
            msg("user", "how are you?"),
            msg("assistant", "fine"),
        ],
        "rejected": [
            msg("user", "hi"),
            msg("assistant", "hello"),
            msg("user", "how are you?"),
            msg("assistant", "bad"),
        ],
        "subset": "chat",
    }
]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_messages_format_with_chat_template(tmp_path, load, tok, suffix):
    path = write_rows(tmp_path / f"m.{suffix}", MESSAGE_ROWS)
    (pair,), report = load(path, tokenizer=tok)
    assert report.format == "messages"
    assert pair.prompt == "<bos><|user|> hi\n<|assistant|> hello <eos>\n<|user|> how are you?\n<|assistant|>"
    assert (pair.chosen, pair.rejected) == (" fine <eos>\n", " bad <eos>\n")
    assert pair.extra == {"subset": "chat"}
    # Prompt + response is exactly the template's rendering of the whole dialogue.
    assert pair.prompt + pair.chosen == tok.apply_chat_template(MESSAGE_ROWS[0]["chosen"], tokenize=False)


def test_messages_format_plain_join_and_prompt_column(tmp_path, load):
    rows = [{"prompt": [msg("system", "be well"), msg("user", "hi")], "chosen": [msg("assistant", "hello")]}]
    rows[0]["rejected"] = [*rows[0]["prompt"], msg("assistant", "no")]  # whole dialogue is accepted too
    (pair,), report = load(write_rows(tmp_path / "m.jsonl", rows))
    assert report.format == "messages"
    assert (pair.prompt, pair.chosen, pair.rejected) == (
        "system: be well\nuser: hi\nassistant:",
        " hello",
        " no",
    )


def test_format_override(tmp_path, load):
    rows = [{"prompt": "ignored", "chosen": HH_ROWS[0]["chosen"], "rejected": HH_ROWS[0]["rejected"]}]
    path = write_rows(tmp_path / "x.jsonl", rows)
    assert load(path)[0][0].prompt == "ignored"  # detected as "prompt"
    (pair,), report = load(path, format="hh")
    assert (report.format, pair.prompt, pair.chosen, pair.extra) == (
        "hh",
        "\n\nHuman: hi\n\nAssistant:",
        " hello",
        {"prompt": "ignored"},
    )
    with pytest.raises(ValueError, match="format must be one of"):
        load(path, format="csv")


# ------------------------------------------------------------------------------------------------ bad rows

GOOD_HH = {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"}
GOOD_PROMPT = {"prompt": "hi", "chosen": "yes", "rejected": "no"}
GOOD_MSG = {
    "chosen": [msg("user", "hi"), msg("assistant", "yes")],
    "rejected": [msg("user", "hi"), msg("assistant", "no")],
}

BAD_ROWS = {
    "missing_value": (GOOD_HH, {"chosen": GOOD_HH["chosen"]}),
    "wrong_type": (GOOD_HH, {"chosen": 5, "rejected": GOOD_HH["rejected"]}),
    "no_shared_prompt": (
        GOOD_HH,
        {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: ok no"},
    ),
    "empty_response": (GOOD_HH, {"chosen": "\n\nHuman: hi\n\nAssistant: ", "rejected": GOOD_HH["rejected"]}),
    "identical_responses": (GOOD_HH, {"chosen": GOOD_HH["chosen"], "rejected": GOOD_HH["chosen"]}),
    "prompt_wrong_type": (GOOD_PROMPT, {"prompt": ["hi"], "chosen": "yes", "rejected": "no"}),
    "prompt_empty_response": (GOOD_PROMPT, {"prompt": "hi", "chosen": "yes", "rejected": "  "}),
    "msg_not_assistant": (
        GOOD_MSG,
        {"chosen": GOOD_MSG["chosen"], "rejected": [msg("user", "hi"), msg("user", "no")]},
    ),
    "msg_prompts_differ": (
        GOOD_MSG,
        {"chosen": GOOD_MSG["chosen"], "rejected": [msg("user", "ok"), msg("assistant", "no")]},
    ),
    "msg_bad_content": (
        GOOD_MSG,
        {"chosen": GOOD_MSG["chosen"], "rejected": [msg("user", "hi"), {"role": "assistant"}]},
    ),
}
REASONS = {
    "prompt_wrong_type": "wrong_type",
    "prompt_empty_response": "empty_response",
    "msg_not_assistant": "bad_messages",
    "msg_prompts_differ": "no_shared_prompt",
    "msg_bad_content": "wrong_type",
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_malformed_row_raises_then_skips(tmp_path, load, case):
    good, bad = BAD_ROWS[case]
    reason = REASONS.get(case, case)
    path = write_rows(tmp_path / "bad_rows.jsonl", [good, good, bad, good])
    with pytest.raises(PreferenceDataError, match=r"bad_rows\.jsonl: row 2: ") as err:
        load(path)
    assert (err.value.row, err.value.reason) == (2, reason)
    assert reason in str(err.value)

    pairs, report = load(path, skip_malformed=True)
    assert [p.row for p in pairs] == [0, 1, 3]
    assert (report.rows_read, report.rows_kept, report.rows_skipped) == (4, 3, 1)
    assert report.skipped == {reason: 1} and report.skipped_rows == [(2, reason)]


def test_skip_counts_several_reasons_in_parquet(tmp_path, load):
    rows = [GOOD_PROMPT, {**GOOD_PROMPT, "chosen": None}, {**GOOD_PROMPT, "rejected": "yes"}, GOOD_PROMPT]
    rows.append({**GOOD_PROMPT, "chosen": None})
    pairs, report = load(write_rows(tmp_path / "p.parquet", rows), skip_malformed=True)
    assert len(pairs) == 2 and report.skipped == {"missing_value": 2, "identical_responses": 1}
    assert report.skipped_rows == [(1, "missing_value"), (2, "identical_responses"), (4, "missing_value")]
    assert "skipped 3" in str(report)


def test_file_errors(tmp_path, load):
    with pytest.raises(PreferenceDataError, match=r"data\.csv: unknown file type"):
        load(tmp_path / "data.csv")
    with pytest.raises(PreferenceDataError, match=r"nowhere\.jsonl: no such file"):
        load(tmp_path / "nowhere.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(GOOD_PROMPT) + "\n{not json\n")
    with pytest.raises(PreferenceDataError, match=r"broken\.jsonl: row 1 \(line 2\) is not JSON"):
        load(broken)
    with pytest.raises(PreferenceDataError, match=r"cols\.jsonl: cannot detect.*'rejected'"):
        load(write_rows(tmp_path / "cols.jsonl", [{"chosen": "a", "other": "b"}]))
    needs_prompt = r"cols2\.jsonl: format 'prompt' needs column\(s\) \['prompt'\]"
    with pytest.raises(PreferenceDataError, match=needs_prompt):
        load(write_rows(tmp_path / "cols2.jsonl", [GOOD_HH]), format="prompt")


def test_load_prompts(tmp_path, tok):
    rows = [{"prompt": "hi"}, {"prompt": " "}, {"prompt": None}, {"prompt": "how are you?"}]
    path = write_rows(tmp_path / "prompts.jsonl", rows)
    with pytest.raises(PreferenceDataError, match=r"prompts\.jsonl: row 1: .*empty_prompt"):
        load_prompts(path)
    prompts, report = load_prompts(path, skip_malformed=True)
    assert prompts == ["hi", "how are you?"]
    assert report.skipped == {"empty_prompt": 1, "missing_value": 1}

    conv = write_rows(tmp_path / "conv.parquet", [{"q": [msg("user", "hi")]}])
    assert load_prompts(conv, "q", tokenizer=tok)[0] == ["<bos><|user|> hi\n<|assistant|>"]
    assert load_prompts(conv, "q")[0] == ["user: hi\nassistant:"]
    with pytest.raises(PreferenceDataError, match=r"conv\.parquet: no column 'prompt'"):
        load_prompts(conv)


# ------------------------------------------------------------------------------------------------ tokenize


def pair(prompt, chosen, rejected):
    return PreferencePair(prompt, chosen, rejected)


@pytest.mark.parametrize("side", ["right", "left"])
def test_tokenize_pairs_padding(tok, side):
    pairs = [pair("hi", " hello", " no"), pair("how are you?", " fine good", " bad")]
    arrays, report = tokenize_pairs(pairs, tok, 10, padding_side=side)
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    assert pad == 0 and {k: v.shape for k, v in arrays.items()} == {
        "chosen_input_ids": (2, 10),
        "chosen_attention_mask": (2, 10),
        "rejected_input_ids": (2, 10),
        "rejected_attention_mask": (2, 10),
        "prompt_lengths": (2, 2),
    }
    assert all(v.dtype == np.int32 for v in arrays.values())
    expected = [
        [bos, *ids(tok, "how are you?"), *ids(tok, "fine good"), eos],
        [bos, *ids(tok, "how are you?"), *ids(tok, "bad"), eos],
    ]
    for key, seq in zip(["chosen", "rejected"], expected, strict=True):
        row, mask = arrays[f"{key}_input_ids"][1], arrays[f"{key}_attention_mask"][1]
        n = len(seq)
        real = slice(0, n) if side == "right" else slice(10 - n, 10)
        pads = slice(n, 10) if side == "right" else slice(0, 10 - n)
        assert row[real].tolist() == seq and (row[pads] == pad).all()
        assert mask[real].all() and not mask[pads].any() and mask.sum() == n
    assert arrays["prompt_lengths"].tolist() == [[2, 2], [5, 5]]
    assert (report.sequences, report.sequences_truncated, report.tokens_cut, report.longest) == (4, 0, 0, 8)


def test_truncation_keeps_response_end(tok):
    prompt = " ".join(f"w{i}" for i in range(30))
    response = " ".join(f"w{i}" for i in range(100, 112))  # 12 words + eos = 13 tokens
    pairs = [pair("hi", " ok", " no"), pair(prompt, " " + response, " bad")]
    arrays, report = tokenize_pairs(pairs, tok, 16)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    chosen = arrays["chosen_input_ids"][1].tolist()
    # bos kept first, then the end of the prompt, then the whole response and eos.
    assert chosen == [bos, *ids(tok, "w28 w29"), *ids(tok, response), eos]
    assert arrays["rejected_input_ids"][1].tolist() == [bos, *ids(tok, prompt)[-13:], *ids(tok, "bad"), eos]
    assert arrays["prompt_lengths"][1].tolist() == [3, 14]
    # chosen had 1 + 30 + 13 = 44 tokens, rejected 1 + 30 + 2 = 33: cut 28 and 17 prompt tokens.
    assert (report.sequences_truncated, report.tokens_cut, report.prompt_tokens_cut) == (2, 45, 45)
    assert report.response_tokens_cut == 0 and report.truncated_rows == [1] and report.longest == 44

    # A response longer than max_length keeps its last max_length tokens (eos included).
    arrays, report = tokenize_pairs(pairs[1:], tok, 8)
    assert arrays["chosen_input_ids"][0].tolist() == [*ids(tok, response)[-7:], eos]
    assert arrays["rejected_input_ids"][0].tolist() == [bos, *ids(tok, "w25 w26 w27 w28 w29 bad"), eos]
    assert arrays["prompt_lengths"][0].tolist() == [0, 6]
    assert report.response_tokens_cut == 13 - 8 and report.prompt_tokens_cut == 31 + 25

    # min_prompt_tokens reserves the prompt's end (with bos) before the response start is cut.
    arrays, _ = tokenize_pairs(pairs[1:], tok, 8, min_prompt_tokens=3)
    assert arrays["chosen_input_ids"][0].tolist() == [
        bos,
        *ids(tok, "w28 w29"),
        *ids(tok, response)[-4:],
        eos,
    ]


def test_pairs_identical_after_truncation_are_left_out_and_named(tok):
    """Responses that differ only in words truncation cuts (the start) become the same tokens: no preference."""
    tail = " ".join(f"w{i}" for i in range(10))
    pairs = [pair("hi", " ok", " no"), pair("hi", " yes " + tail, " no " + tail), pair("hi", " good", " bad")]
    arrays, report = tokenize_pairs(pairs, tok, 8)
    assert report.identical_rows == [1] and report.identical_names == ["item 1"]
    assert "left out 1 of 3 pairs: chosen and rejected are identical after truncation (item 1)" in str(report)
    assert arrays["chosen_input_ids"].shape == (2, 8) and arrays["prompt_lengths"].shape == (2, 2)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert arrays["chosen_input_ids"][1, :4].tolist() == [bos, *ids(tok, "hi good"), eos]  # the third pair, in order
    # With room for the first words the pair is kept.
    _, report = tokenize_pairs(pairs, tok, 16)
    assert report.identical_rows == [] and "left out" not in str(report)
    with pytest.raises(ValueError, match=r"all 1 pairs are identical after truncation to 8 tokens"):
        tokenize_pairs(pairs[1:2], tok, 8)


def test_prepare_pairs_returns_the_pairs_its_arrays_hold(tmp_path, tok):
    from inform_jax.train.config import DataSection
    from inform_jax.train.rm.data import prepare_pairs

    tail = " ".join(f"w{i}" for i in range(10))
    rows = [{"prompt": "hi", "chosen": c, "rejected": r}
            for c, r in [("ok", "no"), ("fine", "bad"), ("yes " + tail, "no " + tail), ("good", "bad")]]  # fmt: skip
    lines = []
    arrays, pairs = prepare_pairs(
        write_rows(tmp_path / "p.jsonl", rows), tok, DataSection(max_length=8), log=lines.append, return_pairs=True
    )
    assert [p.row for p in pairs] == [0, 1, 3] and len(arrays["chosen_input_ids"]) == 3
    assert arrays["response_lengths"].shape == (3, 2)
    assert "left out 1 of 4 pairs: chosen and rejected are identical after truncation (row 2)" in lines[-1]
    for i, p in enumerate(pairs):  # row i of the arrays is pair i
        kept = arrays["chosen_input_ids"][i][arrays["chosen_attention_mask"][i] == 1].tolist()
        assert kept == [tok.bos_token_id, *ids(tok, p.prompt + " " + p.chosen), tok.eos_token_id]
    with pytest.raises(ValueError, match=r"p1\.jsonl: all 1 pairs are identical after truncation"):
        prepare_pairs(write_rows(tmp_path / "p1.jsonl", rows[2:3]), tok, DataSection(max_length=8), log=lines.append)


def test_fit_to_length():
    assert fit_to_length([1, 5, 6], [7, 8], 10) == ([1, 5, 6], [7, 8])
    assert fit_to_length([1, 5, 6, 9], [7, 8], 4, keep_bos_id=1) == ([1, 9], [7, 8])
    assert fit_to_length([1, 5, 6, 9], [7, 8], 4) == ([6, 9], [7, 8])
    assert fit_to_length([1, 5, 6, 9], [7, 8], 3, keep_bos_id=1) == ([9], [7, 8])
    assert fit_to_length([1, 5], [7, 8, 9, 10], 3) == ([], [8, 9, 10])
    assert fit_to_length([1, 5, 6], [7, 8, 9, 10], 3, min_prompt_tokens=9, keep_bos_id=1) == ([1, 6], [10])
    assert fit_to_length([1, 5, 6], [], 2, keep_bos_id=1) == ([1, 6], [])


def test_auto_max_length(tok):
    assert resolve_max_length(0, "auto") == 64 and resolve_max_length(64, "auto") == 64
    assert resolve_max_length(65, "auto") == 128 and resolve_max_length(65, "auto", 100) == 100
    with pytest.raises(ValueError):
        resolve_max_length(3, 0)
    long = " ".join(f"w{i}" for i in range(80))
    arrays, report = tokenize_pairs([pair("hi", " " + long, " no")], tok, "auto")
    assert arrays["chosen_input_ids"].shape == (1, 128) and report.sequences_truncated == 0
    arrays, report = tokenize_pairs([pair("hi", " " + long, " no")], tok, "auto", max_length_cap=70)
    assert arrays["chosen_input_ids"].shape == (1, 70) and report.sequences_truncated == 1
    assert arrays["chosen_input_ids"][0, -2:].tolist() == [*ids(tok, "w79"), tok.eos_token_id]


def test_templated_pairs_have_one_bos_and_one_eos(tmp_path, load, tok):
    pairs, _ = load(write_rows(tmp_path / "m.jsonl", MESSAGE_ROWS), tokenizer=tok)
    arrays, _ = tokenize_pairs(pairs, tok, 32)
    seq = arrays["chosen_input_ids"][0][arrays["chosen_attention_mask"][0] == 1].tolist()
    assert (
        seq
        == tok(tok.apply_chat_template(MESSAGE_ROWS[0]["chosen"], tokenize=False), add_special_tokens=False)[
            "input_ids"
        ]
    )
    assert seq.count(tok.bos_token_id) == 1 and seq[-1] == tok.eos_token_id and seq[-2] != tok.eos_token_id


def test_tokenize_prompts_left_pads_and_keeps_end(tok):
    long = " ".join(f"w{i}" for i in range(20))
    arrays, report = tokenize_prompts(["hi", long], tok, 6)
    bos = tok.bos_token_id
    assert arrays["input_ids"].tolist() == [
        [0, 0, 0, 0, bos, *ids(tok, "hi")],
        [bos, *ids(tok, "w15 w16 w17 w18 w19")],
    ]
    assert arrays["attention_mask"].tolist() == [[0, 0, 0, 0, 1, 1], [1] * 6]
    assert (report.sequences_truncated, report.tokens_cut, report.truncated_rows) == (1, 15, [1])


def test_a_file_rewritten_with_its_old_mtime_is_read_as_it_is_now(tmp_path, load):
    path = tmp_path / "prefs.jsonl"
    row = {"prompt": "p", "chosen": "good", "rejected": "bad"}
    path.write_text("\n".join(json.dumps(row) for _ in range(7)) + "\n")
    stat = os.stat(path)
    assert load(str(path))[1].rows_read == 7
    path.write_text("\n".join(json.dumps(row) for _ in range(40)) + "\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p / rsync -a / tar leave it
    assert load(str(path))[1].rows_read == 40


def test_non_utf8_text_names_the_file_and_row(tmp_path, load):
    good = json.dumps({"prompt": "p", "chosen": "good", "rejected": "bad"}).encode()
    path = tmp_path / "latin.jsonl"
    path.write_bytes(good + b"\n" + good + b"\n" + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(PreferenceDataError, match="latin.jsonl: row 2 is not UTF-8") as err:
        load(str(path))
    assert err.value.row == 2


def test_an_empty_parquet_file_keeps_its_columns_and_a_json_object_is_one_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    assert read_rows(str(path)) == (["prompt"], [])
    pair = {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}]}  # fmt: skip
    one = tmp_path / "pair.json"
    one.write_text(json.dumps(pair, indent=2))
    assert read_rows(str(one)) == (["chosen", "rejected"], [pair])
    columns = tmp_path / "columns.json"
    columns.write_text(json.dumps({"prompt": ["a", "b"], "chosen": ["x", "y"], "rejected": ["u", "v"]}))
    assert read_rows(str(columns))[1][1] == {"prompt": "b", "chosen": "y", "rejected": "v"}
