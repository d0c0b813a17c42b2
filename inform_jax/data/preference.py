"""Preference-pair and prompt files: reading, format detection, parsing and row validation.

Files are read from their current bytes (JSONL, a JSON list, or Parquet; chosen by suffix; no cache); a Hugging Face
Hub dataset name or a ``datasets.Dataset`` is read as well (:func:`open_rows`). Four row
formats are understood; TRL's four preference formats are read unchanged (standard explicit prompt: ``"prompt"``;
standard implicit prompt: ``"implicit"``; conversational, explicit or implicit prompt: ``"messages"``):

``"hh"``
    Anthropic HH-RLHF: ``chosen`` and ``rejected`` are whole transcripts
    (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``). The prompt is their longest shared prefix cut back to the
    end of its last ``"\\n\\nAssistant:"`` tag (the tag belongs to the prompt); each response is the rest.
``"implicit"``
    TRL's standard implicit prompt: ``chosen`` and ``rejected`` strings only. The prompt is their longest common
    prefix, cut as TRL's ``extract_prompt`` cuts it (:func:`split_implicit`: a space just before the point where
    they differ goes to the responses); an empty prompt is allowed.
``"prompt"``
    ``prompt``, ``chosen``, ``rejected`` strings; the responses are completions only (no repeated prompt).
``"messages"``
    ``chosen`` and ``rejected`` are lists of ``{"role", "content"}`` messages, optionally with a separate
    ``prompt`` message list (then ``chosen``/``rejected`` may hold just the completion): TRL's conversational
    explicit and implicit prompt formats. The prompt is the shared leading messages, the response the final
    assistant message (both lists must agree up to it). Text is rendered with the tokenizer's
    chat template when it has one, else as ``"role: content"`` lines.

Detection (when ``format`` is None), from the columns and the rows' ``chosen`` values: message lists ->
``"messages"``; strings with a ``prompt`` column -> ``"prompt"``; strings without one -> ``"hh"`` when every row's
``chosen`` holds HH's ``"\\n\\nAssistant:"`` tag, ``"implicit"`` when none does. A file that mixes lists and strings,
or rows with and without the tag, is ambiguous: detection raises naming the first row that differs from row 0
(pass ``format`` to choose; rows that do not fit it then raise or are skipped one by one).

Every row becomes a :class:`PreferencePair`; columns the format does not use go to ``extra``. A malformed row
raises :class:`PreferenceDataError` naming the file, the 0-based row and the problem; with
``skip_malformed=True`` it is skipped instead and counted by reason in the :class:`LoadReport`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

FORMATS = ("hh", "implicit", "prompt", "messages")
HH_ASSISTANT_TAG = "\n\nAssistant:"

# Suffix -> reader.
_BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}

# Reasons a row can be rejected (keys of LoadReport.skipped).
MISSING_VALUE = "missing_value"
WRONG_TYPE = "wrong_type"
EMPTY_RESPONSE = "empty_response"
EMPTY_PROMPT = "empty_prompt"
IDENTICAL_RESPONSES = "identical_responses"
NO_SHARED_PROMPT = "no_shared_prompt"
BAD_MESSAGES = "bad_messages"
RENDER_FAILED = "render_failed"


class PreferenceDataError(ValueError):
    """A data file or one of its rows cannot be used. ``path``, ``row`` (0-based or None), ``reason``."""

    def __init__(self, message: str, *, path: str, row: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.path = path
        self.row = row
        self.reason = reason


class AmbiguousFormatError(ValueError):
    """Rows of one file that fit different formats; ``row`` is the first row that differs from the first."""

    def __init__(self, row: int, message: str):
        super().__init__(message)
        self.row = row


class _RowError(Exception):
    """Raised by row parsers; the loop that knows the row turns it into PreferenceDataError or a skip."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One comparison: ``prompt + chosen`` is preferred to ``prompt + rejected``.

    ``source`` is the file it came from, ``row`` its 0-based row there, ``extra`` the row's other columns
    (e.g. ``subset``, a ``hacked`` label, a ``margin``).
    """

    prompt: str
    chosen: str
    rejected: str
    source: str = ""
    row: int = -1
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LoadReport:
    """What happened to every row of one file: ``rows_read == rows_kept + sum(skipped.values())``.

    ``skipped`` counts skipped rows by reason; ``skipped_rows`` lists ``(row, reason)`` for each of them.
    """

    path: str
    format: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped_rows: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        text = f"{self.path} [{self.format}]: read {self.rows_read}, kept {self.rows_kept}"
        if self.skipped:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
            text += f", skipped {self.rows_skipped} ({reasons})"
        return text


# ----------------------------------------------------------------------------------------------- reading


def _is_dataset(source: Any) -> bool:
    """A ``datasets.Dataset`` (duck-typed: importing ``datasets`` is slow and only its users need it)."""
    return hasattr(source, "column_names") and hasattr(source, "to_list") and hasattr(source, "num_rows")


def source_name(source: Any) -> str:
    """How a data source is named in reports, errors and the run config: a path as given, a ``datasets.Dataset``
    by its row count and fingerprint (which changes with its contents)."""
    if _is_dataset(source):
        return f"datasets.Dataset({source.num_rows} rows, fingerprint {getattr(source, '_fingerprint', '?')})"
    return os.fspath(source)


def open_rows(source: Any, *, json_field: str | None = None) -> tuple[str, list[str], list[dict[str, Any]]]:
    """``(name, column_names, rows)`` of a data source, named in reports and errors by ``name``:

    - a ``datasets.Dataset``: its rows (``to_list``), named ``datasets.Dataset(<rows> rows, fingerprint <fp>)``;
    - a local file: :func:`read_rows`;
    - a Hugging Face Hub dataset name that is not a local path, ``org/name[@revision][/path/in/repo]``: the file
      :func:`inform_jax.hub.resolve_data_file` picks in the dataset's snapshot, then :func:`read_rows`.

    Every row then goes through the same format detection and checks, whatever its source."""
    if isinstance(getattr(source, "column_names", None), dict):  # a DatasetDict: column names per split
        splits = list(source.column_names)
        raise PreferenceDataError(f"a DatasetDict of splits {splits}: pass one split (e.g. dataset[{splits[0]!r}])",
                                  path="DatasetDict")  # fmt: skip
    if _is_dataset(source):
        columns = list(source.column_names)
        return source_name(source), columns, [{c: row.get(c) for c in columns} for row in source.to_list()]
    path = os.fspath(source)
    if not os.path.exists(path):
        from inform_jax.hub import HubNameError, parse_hub_name, resolve_data_file

        if parse_hub_name(path) is not None:  # else read_rows names the missing file as it always has
            try:
                path = resolve_data_file(path)
            except HubNameError as err:
                raise PreferenceDataError(str(err), path=path) from err
    return path, *read_rows(path, json_field=json_field)


def _builder_for(path: str) -> str:
    name = os.path.basename(path).lower()
    for suffix in sorted(_BUILDERS, key=len, reverse=True):  # longest first so ".jsonl.gz" beats ".gz"
        if name.endswith(suffix):
            return _BUILDERS[suffix]
    known = ", ".join(sorted(_BUILDERS))
    raise PreferenceDataError(f"{path}: unknown file type; expected one of {known}", path=path)


def read_rows(path: str | os.PathLike, *, json_field: str | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a local JSONL / JSON / Parquet file (optionally gzipped JSON) from its current bytes; returns
    ``(column_names, rows)``, every row holding every column (None where a row lacks one).

    Nothing is cached: a file rewritten with its old modification time (``cp -p``, ``rsync -a``, tar) is read as
    it is now, and nothing is written outside the run. Values keep their Python types, so the row validators
    below can name the exact bad row; a line that is not JSON or not UTF-8 raises naming the file and row.
    ``json_field`` selects a list nested under a key of a JSON object (``{"data": [...]}``).
    """
    path = os.fspath(path)
    builder = _builder_for(path)
    if not os.path.isfile(path):
        raise PreferenceDataError(f"{path}: no such file", path=path)
    columns, rows = _read_parquet(path) if builder == "parquet" else _read_json(path, json_field)
    columns = dict.fromkeys(columns)  # the file's own column names first (an empty file keeps them), then any others
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns), [{c: row.get(c) for c in columns} for row in rows]


def _read_parquet(path: str) -> tuple[list[str], list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        return table.column_names, table.to_pylist()
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise PreferenceDataError(f"{path}: cannot read as parquet: {err}", path=path) from err


def _read_json(path: str, json_field: str | None) -> tuple[list[str], list[dict[str, Any]]]:
    """JSON Lines (``.jsonl``); for ``.json``: a list of objects, an object with the list under ``json_field``, a
    dict of equal-length columns, or JSON Lines."""
    import gzip

    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n")
        raise PreferenceDataError(f"{path}: row {line} is not UTF-8 text (byte {err.start})", path=path,
                                  row=line) from None  # fmt: skip
    if os.path.basename(path).lower().endswith((".jsonl", ".jsonl.gz")):
        return [], _json_lines(text, path)
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:  # a .json file holding JSON Lines
        return [], _json_lines(text, path)
    columns: list[str] = []
    if isinstance(whole, dict):
        if json_field is not None:
            if not isinstance(whole.get(json_field), list):
                raise PreferenceDataError(f"{path}: no list under the key {json_field!r}", path=path)
            whole = whole[json_field]
        elif whole and all(isinstance(v, list) and not any(isinstance(x, dict) for x in v) for v in whole.values()):
            # columns of equal length (lists of dicts are one row's messages, not a column)
            columns = list(whole)
            lengths = {len(v) for v in whole.values()}
            if len(lengths) != 1:
                raise PreferenceDataError(f"{path}: a JSON object of columns with different lengths", path=path)
            whole = [dict(zip(whole, values, strict=True)) for values in zip(*whole.values(), strict=True)]
        else:
            whole = [whole]
    return columns, [_as_row(value, path, i) for i, value in enumerate(whole)]


def _json_lines(text: str, path: str) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise PreferenceDataError(f"{path}: row {len(rows)} (line {i + 1}) is not JSON: {err}", path=path,
                                      row=len(rows)) from None  # fmt: skip
        rows.append(_as_row(value, path, len(rows)))
    return rows


def _as_row(value, path: str, row: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PreferenceDataError(f"{path}: row {row} is a JSON {type(value).__name__}, not an object", path=path,
                                  row=row)  # fmt: skip
    return value


# ----------------------------------------------------------------------------------------------- fields


def _get_number(row: Mapping[str, Any], column: str) -> float:
    """A finite number (not a bool) from ``column``, e.g. TRL's per-pair ``margin``."""
    value = row.get(column)
    if value is None:
        raise _RowError(MISSING_VALUE, f"column '{column}' is missing or null")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _RowError(WRONG_TYPE, f"column '{column}' should be a finite number, got {value!r}")
    return float(value)


def _get_str(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        raise _RowError(MISSING_VALUE, f"column '{column}' is missing or null")
    if not isinstance(value, str):
        raise _RowError(WRONG_TYPE, f"column '{column}' should be a string, got {type(value).__name__}")
    return value


def _check_responses(chosen: str, rejected: str) -> None:
    """Both responses must be non-blank and differ: an identical pair carries no preference."""
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise _RowError(EMPTY_RESPONSE, f"the {name} response is empty")
    if chosen == rejected:
        raise _RowError(IDENTICAL_RESPONSES, "chosen and rejected responses are identical")


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts into ``(prompt, chosen_response, rejected_response)``.

    The prompt is the longest shared prefix ending with the last ``"\\n\\nAssistant:"`` tag inside it, so a
    multi-turn dialogue keeps all earlier turns in the prompt. Raises ``_RowError`` if there is none.
    """
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(HH_ASSISTANT_TAG)
    if cut < 0:
        raise _RowError(NO_SHARED_PROMPT, "chosen and rejected share no prompt ending in '\\n\\nAssistant:'")
    prompt = shared[: cut + len(HH_ASSISTANT_TAG)]
    return prompt, chosen[len(prompt) :], rejected[len(prompt) :]


def _parse_hh(row: Mapping[str, Any]) -> tuple[str, str, str]:
    prompt, chosen, rejected = split_hh(_get_str(row, "chosen"), _get_str(row, "rejected"))
    _check_responses(chosen, rejected)
    return prompt, chosen, rejected


def split_implicit(chosen: str, rejected: str) -> int:
    """Where TRL's ``extract_prompt`` cuts two texts into a shared prompt and the responses: at the first character
    where they differ, less one when the character before it is a space (the space goes to the responses); when one
    text is a prefix of the other, one character before the shorter one ends (each response keeps at least one).
    0 is allowed: an empty prompt."""
    n = min(len(chosen), len(rejected))
    for cut in range(n):
        if chosen[cut] != rejected[cut]:
            return cut - 1 if cut > 0 and chosen[cut - 1] == " " else cut
    return max(n - 1, 0)


def _parse_implicit(row: Mapping[str, Any]) -> tuple[str, str, str]:
    chosen, rejected = _get_str(row, "chosen"), _get_str(row, "rejected")
    cut = split_implicit(chosen, rejected)
    prompt, chosen, rejected = chosen[:cut], chosen[cut:], rejected[cut:]
    _check_responses(chosen, rejected)
    return prompt, chosen, rejected


def _parse_prompt(row: Mapping[str, Any]) -> tuple[str, str, str]:
    prompt = _get_str(row, "prompt")
    chosen, rejected = _get_str(row, "chosen"), _get_str(row, "rejected")
    _check_responses(chosen, rejected)
    return prompt, chosen, rejected


# ----------------------------------------------------------------------------------------------- messages

Message = dict[str, str]


def _get_messages(row: Mapping[str, Any], column: str) -> list[Message]:
    value = row.get(column)
    if value is None:
        raise _RowError(MISSING_VALUE, f"column '{column}' is missing or null")
    if not isinstance(value, list):
        kind = type(value).__name__
        raise _RowError(WRONG_TYPE, f"column '{column}' should be a list of messages, got {kind}")
    messages = []
    for k, msg in enumerate(value):
        if not isinstance(msg, Mapping):
            raise _RowError(WRONG_TYPE, f"'{column}' message {k} should be a dict, got {type(msg).__name__}")
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise _RowError(WRONG_TYPE, f"'{column}' message {k} needs string 'role' and 'content'")
        # Parquet structs give every message the union of keys (None-filled); keep only what templates expect.
        messages.append({"role": role, "content": content})
    return messages


def _split_messages(row: Mapping[str, Any], has_prompt: bool) -> tuple[list[Message], Message, Message]:
    """Return ``(prompt_messages, chosen_reply, rejected_reply)``; both replies are assistant messages."""
    chosen, rejected = _get_messages(row, "chosen"), _get_messages(row, "rejected")
    if has_prompt:
        prompt = _get_messages(row, "prompt")
        # `chosen`/`rejected` may repeat the prompt (whole conversation) or hold only the completion.
        chosen = chosen[len(prompt) :] if chosen[: len(prompt)] == prompt else chosen
        rejected = rejected[len(prompt) :] if rejected[: len(prompt)] == prompt else rejected
        if len(chosen) != 1 or len(rejected) != 1:
            raise _RowError(
                BAD_MESSAGES,
                f"after the prompt, chosen and rejected should each hold one assistant message "
                f"(got {len(chosen)} and {len(rejected)})",
            )
    else:
        if not chosen or not rejected:
            raise _RowError(BAD_MESSAGES, "chosen and rejected must each hold at least one message")
        prompt = chosen[:-1]
        if rejected[:-1] != prompt:
            raise _RowError(NO_SHARED_PROMPT, "chosen and rejected differ before their final message")
    for name, msg in (("chosen", chosen[-1]), ("rejected", rejected[-1])):
        if msg["role"] != "assistant":
            role = msg["role"]
            raise _RowError(BAD_MESSAGES, f"the final {name} message has role '{role}', not 'assistant'")
    return prompt, chosen[-1], rejected[-1]


def _has_chat_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def render_prompt(messages: Sequence[Message], tokenizer: Any = None) -> str:
    """Render prompt messages ready for an assistant reply (chat template, else ``"role: content"`` lines)."""
    if _has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def _render_response(prompt_text: str, prompt: list[Message], reply: Message, tokenizer: Any) -> str:
    """The text the reply adds after ``prompt_text``, so that prompt + response renders the conversation."""
    if not _has_chat_template(tokenizer):
        return " " + reply["content"]
    full = tokenizer.apply_chat_template([*prompt, reply], tokenize=False)
    if not full.startswith(prompt_text):
        # Some templates rewrite earlier turns once a reply exists; splitting would then misplace tokens.
        raise _RowError(RENDER_FAILED, "the chat template does not render the prompt as a prefix")
    return full[len(prompt_text) :]


def _parse_messages(row: Mapping[str, Any], tokenizer: Any, has_prompt: bool) -> tuple[str, str, str]:
    prompt, chosen, rejected = _split_messages(row, has_prompt)
    # Compare contents before rendering: templates add tags that would make empty replies look non-empty.
    _check_responses(chosen["content"], rejected["content"])
    try:
        prompt_text = render_prompt(prompt, tokenizer)
        return (
            prompt_text,
            _render_response(prompt_text, prompt, chosen, tokenizer),
            _render_response(prompt_text, prompt, rejected, tokenizer),
        )
    except _RowError:
        raise
    except Exception as err:  # templates raise on e.g. non-alternating roles: a property of this row
        raise _RowError(RENDER_FAILED, f"chat template failed: {err}") from err


# ----------------------------------------------------------------------------------------------- loading


def _first_value(rows: Sequence[Mapping[str, Any]], column: str) -> Any:
    return next((r[column] for r in rows if r.get(column) is not None), None)


def _row_kind(chosen: Any) -> str | None:
    """What a row's ``chosen`` value says about the format: "messages", "hh" (HH's Assistant tag), "text", or None
    (null or another type: the row is malformed whatever the format, and its parser will say so)."""
    if isinstance(chosen, list):
        return "messages"
    if isinstance(chosen, str):
        return "hh" if HH_ASSISTANT_TAG in chosen else "text"
    return None


def detect_format(columns: Sequence[str], rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """Pick ``"hh"``, ``"implicit"``, ``"prompt"`` or ``"messages"`` from the column names and every row's
    ``chosen`` (the rule is in the module docstring).

    Raises ``ValueError`` if the columns fit none of them, or if rows disagree (naming the first such row).
    """
    cols = set(columns)
    if not {"chosen", "rejected"} <= cols:
        raise ValueError(f"need columns 'chosen' and 'rejected' (found {sorted(cols)})")
    first = None  # (row, kind) of the first row that says something
    for i, row in enumerate(rows):
        kind = _row_kind(row.get("chosen"))
        if kind is None:
            continue
        if first is None:
            first = (i, kind)
        elif kind != first[1] and not ("prompt" in cols and "messages" not in (kind, first[1])):
            # with a prompt column, HH tags in a completion do not matter; lists vs strings always do
            names = {"messages": "a list of messages", "hh": "text with HH's '\\n\\nAssistant:' tag",
                     "text": "text without HH's '\\n\\nAssistant:' tag"}  # fmt: skip
            raise AmbiguousFormatError(
                i,
                f"row {i}: 'chosen' is {names[kind]} but row {first[0]}'s is {names[first[1]]}; the format is "
                f"ambiguous: set it (data.format: one of {list(FORMATS)})",
            )
    if first is not None and first[1] == "messages":
        return "messages"
    if "prompt" in cols:
        return "prompt"
    return "implicit" if first is not None and first[1] == "text" else "hh"


_REQUIRED = {
    "hh": ("chosen", "rejected"),
    "implicit": ("chosen", "rejected"),
    "prompt": ("prompt", "chosen", "rejected"),
}


def _used_columns(fmt: str, columns: Sequence[str]) -> tuple[str, ...]:
    if fmt == "messages":
        return ("prompt", "chosen", "rejected") if "prompt" in columns else ("chosen", "rejected")
    return _REQUIRED[fmt]


def _check_columns(path: str, fmt: str, columns: Sequence[str]) -> None:
    """A column absent from the whole file is a file error, not thousands of row errors."""
    missing = [c for c in _REQUIRED.get(fmt, ("chosen", "rejected")) if c not in columns]
    if missing:
        raise PreferenceDataError(
            f"{path}: format '{fmt}' needs column(s) {missing}; the file has {list(columns)}", path=path
        )


def _collect(path: str, fmt: str, rows: Sequence[Mapping[str, Any]], parse, skip_malformed: bool):
    """Run ``parse(i, row)`` on every row; raise on the first bad one, or skip and count it.

    Returns ``(parsed_rows, report)``.
    """
    report = LoadReport(path=path, format=fmt, rows_read=len(rows))
    kept, reasons = [], Counter()
    for i, row in enumerate(rows):
        try:
            kept.append(parse(i, row))
        except _RowError as err:
            if not skip_malformed:
                raise PreferenceDataError(
                    f"{path}: row {i}: {err.detail} [{err.reason}]", path=path, row=i, reason=err.reason
                ) from None
            reasons[err.reason] += 1
            report.skipped_rows.append((i, err.reason))
    report.rows_kept = len(kept)
    report.skipped = dict(reasons)
    if reasons:
        logger.warning("skipped malformed rows: %s", report)
    return kept, report


def load_preferences(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    tokenizer: Any = None,
    skip_malformed: bool = False,
    json_field: str | None = None,
    margin_column: str | None = None,
) -> tuple[list[PreferencePair], LoadReport]:
    """Load a preference file into ``PreferencePair``s; returns ``(pairs, report)``.

    Args:
      path: a ``.jsonl``, ``.json`` (a list of rows) or ``.parquet`` file, a Hub dataset name or a
        ``datasets.Dataset`` (:func:`open_rows`).
      format: ``"hh"``, ``"implicit"``, ``"prompt"`` or ``"messages"``; detected when None (module docstring).
      tokenizer: renders ``"messages"`` rows with its chat template (plain ``"role: content"`` lines if it has
        none, or if None).
      skip_malformed: skip bad rows and count them in the report instead of raising.
      json_field: for a JSON object file, the key holding the list of rows.
      margin_column: a column every row must hold a finite number in (TRL's ``margin``); kept in ``extra`` as a
        float. A row without one is malformed (raised naming the row, or skipped with ``skip_malformed``).

    Raises:
      PreferenceDataError: unknown suffix, missing or unreadable file, missing columns, or (unless
        ``skip_malformed``) a malformed row; the message names the file and the 0-based row.
    """
    path, columns, rows = open_rows(path, json_field=json_field)
    if format is None:
        try:
            format = detect_format(columns, rows)
        except ValueError as err:
            message = f"{path}: cannot detect the preference format: {err}"
            raise PreferenceDataError(message, path=path, row=getattr(err, "row", None)) from None
    elif format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    _check_columns(path, format, columns)
    if margin_column is not None and margin_column not in columns:
        raise PreferenceDataError(
            f"{path}: no column '{margin_column}' (loss.margin: column reads a per-pair margin from it); the file "
            f"has {list(columns)}",
            path=path,
        )
    used = _used_columns(format, columns)
    has_prompt = "prompt" in columns

    def parse(i: int, row: Mapping[str, Any]) -> PreferencePair:
        if format == "hh":
            prompt, chosen, rejected = _parse_hh(row)
        elif format == "implicit":
            prompt, chosen, rejected = _parse_implicit(row)
        elif format == "prompt":
            prompt, chosen, rejected = _parse_prompt(row)
        else:
            prompt, chosen, rejected = _parse_messages(row, tokenizer, has_prompt)
        extra = {k: v for k, v in row.items() if k not in used}
        if margin_column is not None:
            extra[margin_column] = _get_number(row, margin_column)
        return PreferencePair(prompt, chosen, rejected, source=path, row=i, extra=extra)

    return _collect(path, format, rows, parse, skip_malformed)


def load_prompts(
    path: str | os.PathLike,
    column: str = "prompt",
    *,
    tokenizer: Any = None,
    skip_malformed: bool = False,
    json_field: str | None = None,
) -> tuple[list[str], LoadReport]:
    """Load the prompts of a prompt-only file (PPO rollouts); returns ``(prompts, report)``.

    A cell may be a string or a list of ``{"role", "content"}`` messages, rendered ready for the assistant's
    reply (chat template with a generation prompt, else ``"role: content"`` lines). A null, wrongly typed or
    blank prompt is malformed: raised with file and row, or skipped and counted with ``skip_malformed``.
    """
    path, columns, rows = open_rows(path, json_field=json_field)
    if column not in columns:
        raise PreferenceDataError(f"{path}: no column '{column}'; the file has {list(columns)}", path=path)

    def parse(i: int, row: Mapping[str, Any]) -> str:
        if isinstance(row.get(column), list):
            messages = _get_messages(row, column)
            if not messages:
                raise _RowError(EMPTY_PROMPT, f"prompt '{column}' has no messages")
            try:
                return render_prompt(messages, tokenizer)
            except Exception as err:
                raise _RowError(RENDER_FAILED, f"chat template failed: {err}") from err
        prompt = _get_str(row, column)
        if not prompt.strip():
            raise _RowError(EMPTY_PROMPT, f"column '{column}' is blank")
        return prompt

    return _collect(path, "prompts", rows, parse, skip_malformed)


@dataclasses.dataclass(frozen=True)
class ResponseRow:
    """One (prompt, response) sample, e.g. a policy's generation to score or embed. ``label``: the optional
    per-sample label (e.g. ``hacked``), None when the file has no label column."""

    prompt: str
    response: str
    label: bool | None = None
    source: str = ""
    row: int = -1
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _get_label(row: Mapping[str, Any], column: str) -> bool:
    value = row.get(column)
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise _RowError(WRONG_TYPE, f"label column '{column}' should be true/false or 0/1, got {value!r}")


def load_responses(
    path: str | os.PathLike,
    *,
    prompt_column: str = "prompt",
    response_column: str = "response",
    label_column: str | None = "hacked",
    tokenizer: Any = None,
    skip_malformed: bool = False,
) -> tuple[list[ResponseRow], LoadReport]:
    """Load (prompt, response) rows, with an optional boolean label column; returns ``(rows, report)``.

    The prompt may be a string or a list of messages (rendered as in :func:`load_prompts`); the response is a
    string completion. ``label_column`` is read when the file has it (every row then needs true/false or 0/1),
    and ignored when the file lacks it; pass None to never read labels.
    """
    path, columns, rows = open_rows(path)
    for column in (prompt_column, response_column):
        if column not in columns:
            raise PreferenceDataError(f"{path}: no column '{column}'; the file has {list(columns)}", path=path)
    has_label = label_column is not None and label_column in columns
    used = {prompt_column, response_column, label_column}

    def parse(i: int, row: Mapping[str, Any]) -> ResponseRow:
        if isinstance(row.get(prompt_column), list):
            messages = _get_messages(row, prompt_column)
            if not messages:
                raise _RowError(EMPTY_PROMPT, f"prompt '{prompt_column}' has no messages")
            prompt = render_prompt(messages, tokenizer)
        else:
            prompt = _get_str(row, prompt_column)
        response = _get_str(row, response_column)
        if not response.strip():
            raise _RowError(EMPTY_RESPONSE, f"column '{response_column}' is blank")
        label = _get_label(row, label_column) if has_label else None
        extra = {k: v for k, v in row.items() if k not in used}
        return ResponseRow(prompt, response, label, source=path, row=i, extra=extra)

    return _collect(path, "responses", rows, parse, skip_malformed)
