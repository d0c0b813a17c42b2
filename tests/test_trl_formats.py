"""TRL's four preference formats, read unchanged from JSONL files written the way TRL's docs show them, the
format-detection rule (HH vs implicit prompt, ambiguous files), and the optional ``margin`` column."""

import json

import pytest

from inform_jax.data.preference import PreferenceDataError, load_preferences, split_implicit


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def msg(role, content):
    return {"role": role, "content": content}


# The rows of TRL's "Dataset formats" table (preference type), and the split each must give.
SKY_USER = [msg("user", "What color is the sky?")]
TRL_FILES = {
    "standard_explicit": (
        [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}],
        "prompt",
        ("The sky is", " blue.", " green."),
    ),
    "standard_implicit": (
        [{"chosen": "The sky is blue.", "rejected": "The sky is green."}],
        "implicit",
        ("The sky is", " blue.", " green."),  # TRL's extract_prompt gives the space to the responses
    ),
    "conversational_explicit": (
        [{"prompt": SKY_USER, "chosen": [msg("assistant", "It is blue.")],
          "rejected": [msg("assistant", "It is green.")]}],
        "messages",
        ("user: What color is the sky?\nassistant:", " It is blue.", " It is green."),
    ),
    "conversational_implicit": (
        [{"chosen": [*SKY_USER, msg("assistant", "It is blue.")],
          "rejected": [*SKY_USER, msg("assistant", "It is green.")]}],
        "messages",
        ("user: What color is the sky?\nassistant:", " It is blue.", " It is green."),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TRL_FILES))
def test_trl_preference_formats_are_read_unchanged(tmp_path, name):
    rows, fmt, split = TRL_FILES[name]
    (pair,), report = load_preferences(write_jsonl(tmp_path / f"{name}.jsonl", rows))
    assert report.format == fmt
    assert (pair.prompt, pair.chosen, pair.rejected) == split


def test_implicit_prompt_split_follows_trl_extract_prompt():
    cases = [  # (chosen, rejected) -> prompt, as TRL's extract_prompt cuts it
        (("The sky is blue.", "The sky is green."), "The sky is"),
        (("yes", "no"), ""),  # nothing shared: an empty prompt
        (("Q: 2+2? A: 4", "Q: 2+2? A: 5"), "Q: 2+2? A:"),
        (("ab", "abc"), "a"),  # one a prefix of the other: each response keeps a character
    ]
    for (chosen, rejected), prompt in cases:
        assert chosen[: split_implicit(chosen, rejected)] == prompt


def test_implicit_file_with_an_empty_prompt_and_explicit_format_override(tmp_path):
    path = write_jsonl(tmp_path / "implicit.jsonl", [{"chosen": "yes", "rejected": "no"}])
    (pair,), report = load_preferences(path)
    assert (report.format, pair.prompt, pair.chosen, pair.rejected) == ("implicit", "", "yes", "no")
    # An HH-tagged file read as implicit on request: the prompt is then the whole shared prefix.
    hh = {"chosen": "\n\nHuman: hi\n\nAssistant: good day", "rejected": "\n\nHuman: hi\n\nAssistant: good bye"}
    path = write_jsonl(tmp_path / "hh.jsonl", [hh])
    assert load_preferences(path)[0][0].prompt == "\n\nHuman: hi\n\nAssistant:"  # detected: hh
    (pair,), report = load_preferences(path, format="implicit")
    assert (report.format, pair.prompt, pair.chosen) == ("implicit", "\n\nHuman: hi\n\nAssistant: good", " day")


@pytest.mark.parametrize(
    "second, says",
    [
        ({"chosen": "The sky is blue.", "rejected": "The sky is green."}, "text without HH's"),
        ({"chosen": [msg("user", "hi"), msg("assistant", "a")], "rejected": [msg("user", "hi"), msg("assistant", "b")]},
         "a list of messages"),
    ],
)  # fmt: skip
def test_a_file_mixing_formats_is_ambiguous_and_names_the_row(tmp_path, second, says):
    hh = {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"}
    path = write_jsonl(tmp_path / "mixed.jsonl", [hh, hh, second, hh])
    with pytest.raises(PreferenceDataError, match=rf"mixed\.jsonl: cannot detect .*row 2: 'chosen' is {says}") as err:
        load_preferences(path)
    assert err.value.row == 2 and "data.format" in str(err.value)
    # Choosing the format resolves it: the row that does not fit is then reported (or skipped) on its own.
    pairs, report = load_preferences(path, format="hh", skip_malformed=True)
    assert [p.row for p in pairs] == [0, 1, 3] and report.skipped_rows[0][0] == 2
