"""Pluggable pairwise judges for :func:`inform_jax.eval.winrate.compare`.

A judge is a callable ``judge(prompt, first, second) -> float`` (> 0 prefers ``first``) with a batched
``preferences(prompts, firsts, seconds) -> np.ndarray [N]``, which ``compare`` uses to ask both presentation
orders in one call.

:class:`ScoreJudge`
    Position-free, from a per-response scorer ``score_fn(prompts, responses) -> [N]``: preference =
    score(first) - score(second). Each distinct (prompt, response) is scored once per call, so both orders cost
    one score per response.
:class:`RewardModelJudge`
    A ScoreJudge on a (gold) reward-model folder written by ``save_reward_model``: prompt + response + eos
    tokenized as the reward model was trained, scored in jitted batches.
:class:`ChatJudge`
    An OpenAI-compatible chat-completions endpoint asked the pairwise prompt ``prompts/pairwise.txt``; its
    answer ends with ``Verdict: A``, ``Verdict: B`` or ``Verdict: tie`` -> +1, -1, 0. A judge that always picks
    the same position yields ties, since both orders are asked.

:func:`load_judge` builds one from a spec: ``"rm:PATH"``, ``"chat:BASE_URL"`` (with ``model=``) or ``"gold"``
(the synthetic world's gold reward, computed from text).
"""

from __future__ import annotations

import functools
import http.client
import inspect
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.models.batched import by_length, map_batches
from inform_jax.models.sharding import model_mesh

logger = logging.getLogger(__name__)

PLACEHOLDERS = ("prompt", "response_a", "response_b")
VERDICT_VALUES = {"A": 1.0, "B": -1.0, "tie": 0.0}
# Default tie margins of `inform-jax win-rate` by judge kind (None: --margin is required; see default_margin).
DEFAULT_MARGINS: dict[str, float | None] = {"chat": 0.0, "gold": 0.05, "rm": None}


class JudgeError(RuntimeError):
    """A judge could not give a preference: an endpoint failed or answered something unusable."""


def _check_triples(prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> int:
    if not (len(prompts) == len(firsts) == len(seconds)):
        raise ValueError(f"need equal numbers of prompts and responses, got {len(prompts)}, {len(firsts)}, "
                         f"{len(seconds)}")  # fmt: skip
    return len(prompts)


# ------------------------------------------------------------------------------------------------ scores


class ScoreJudge:
    """Position-free judge from ``score_fn(prompts, responses) -> [N]``: judge(x, a, b) = s(x, a) - s(x, b).

    ``default_margin``: the tie margin the CLI uses when none is given (None: one must be given).
    """

    kind = "score"

    def __init__(self, score_fn: Callable[[list[str], list[str]], Any], *, default_margin: float | None = None):
        self.score_fn = score_fn
        self.default_margin = default_margin

    def scores(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Scores [N] of (prompt, response) rows; each distinct row is passed to ``score_fn`` once."""
        if len(prompts) != len(responses):
            raise ValueError(f"need equal numbers of prompts and responses, got {len(prompts)}, {len(responses)}")
        index: dict[tuple[str, str], int] = {}
        rows = [index.setdefault((p, r), len(index)) for p, r in zip(prompts, responses, strict=True)]
        if not index:
            return np.zeros(0, np.float64)
        unique_prompts, unique_responses = (list(x) for x in zip(*index, strict=True))
        scores = np.asarray(self.score_fn(unique_prompts, unique_responses), np.float64)
        if scores.shape != (len(index),):
            raise ValueError(f"score_fn returned shape {scores.shape} for {len(index)} responses")
        bad = np.nonzero(~np.isfinite(scores))[0]
        if bad.size:
            p, r = unique_prompts[bad[0]], unique_responses[bad[0]]
            raise JudgeError(f"score_fn gave {scores[bad[0]]} for prompt {p[:80]!r}, response {r[:80]!r}")
        return scores[np.asarray(rows)]

    def preferences(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> np.ndarray:
        """score(first) - score(second) [N]."""
        n = _check_triples(prompts, firsts, seconds)
        both = self.scores([*prompts, *prompts], [*firsts, *seconds])
        return both[:n] - both[n:]

    def __call__(self, prompt: str, first: str, second: str) -> float:
        return float(self.preferences([prompt], [first], [second])[0])


def gold_judge(world=None) -> ScoreJudge:
    """The synthetic world's gold reward (in [-1, 1], from text) as a judge; default tie margin 0.05, the lab's."""
    if world is None:
        from inform_jax.world.world import SyntheticWorld

        world = SyntheticWorld()

    def gold(prompts: list[str], responses: list[str]) -> np.ndarray:
        return np.array([world.gold_reward_text(p, r) for p, r in zip(prompts, responses, strict=True)])

    judge = ScoreJudge(gold, default_margin=DEFAULT_MARGINS["gold"])
    judge.world = world
    return judge


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _rewards_jit(graphdef, state, input_ids, attention_mask):
    return nnx.merge(graphdef, state)(input_ids, attention_mask).reward.astype(jnp.float32)


def sequence_rewards(
    model, input_ids, attention_mask, *, batch_size: int = 32, token_budget: int | None = None
) -> np.ndarray:
    """Rewards [N] of right-padded sequences input_ids / attention_mask [N, T] under a reward model (or
    ensemble), in jitted batches by length (at most ``batch_size`` rows and ``token_budget`` padded tokens) over the
    model's mesh (:func:`inform_jax.models.batched.map_batches`)."""
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids and attention_mask must be non-empty [N, T] of one shape, got "
                         f"{input_ids.shape} and {attention_mask.shape}")  # fmt: skip
    mesh = model_mesh(model)  # first: it may place the model over every device
    graphdef, state = nnx.split(model)
    fn = lambda b, _: _rewards_jit(graphdef, state, b["input_ids"], b["attention_mask"])  # noqa: E731
    rows = {"input_ids": input_ids, "attention_mask": attention_mask}
    return map_batches(fn, rows, batch_size=batch_size, mesh=mesh, token_budget=token_budget, **by_length(rows))


class RewardModelJudge(ScoreJudge):
    """A reward-model folder (``save_reward_model``'s, a single model or an ensemble) as a ScoreJudge.

    Each (prompt, response) is tokenized as the reward model was trained and as ``detect`` embeds responses
    (:func:`inform_jax.data.tokenize.tokenize_sft`: prompt with the tokenizer's special tokens, response, eos;
    right-padded; long sequences keep their end) and scored in jitted batches of ``batch_size``.

    Args:
      path: the reward-model folder.
      tokenizer: a tokenizer, or its folder; default: the reward-model folder (train-rm saves it there).
      max_length: token length, or "auto" (a multiple of 64 >= the longest sequence, at most ``max_length_cap``).
      batch_size: rows per jitted call; token_budget: padded tokens per call (batches go by length).
      log: where truncation is reported.
    """

    kind = "rm"

    def __init__(
        self,
        path: str | os.PathLike,
        tokenizer: Any = None,
        *,
        max_length: int | str = "auto",
        max_length_cap: int = 2048,
        batch_size: int = 32,
        token_budget: int | None = None,
        log: Callable[[str], Any] = print,
    ):
        from inform_jax.data.tokenizer import load_tokenizer
        from inform_jax.models.reward_model import load_reward_model

        self.path = os.fspath(path)
        self.model = load_reward_model(self.path)
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            tokenizer = load_tokenizer(os.fspath(tokenizer) if tokenizer is not None else self.path)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_length_cap = max_length_cap
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.log = log
        super().__init__(self.rewards, default_margin=DEFAULT_MARGINS["rm"])

    def tokenize(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` [N, L] of prompt + response + eos; truncation goes to ``log``."""
        from inform_jax.data.tokenize import tokenize_sft

        arrays, report = tokenize_sft(
            list(zip(prompts, responses, strict=True)), self.tokenizer, self.max_length,
            max_length_cap=self.max_length_cap,
        )  # fmt: skip
        if report.sequences_truncated:
            self.log(str(report))
        return arrays

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """The reward model's rewards [N] of (prompt, response) rows."""
        arrays = self.tokenize(prompts, responses)
        return sequence_rewards(self.model, arrays["input_ids"], arrays["attention_mask"], batch_size=self.batch_size,
                                token_budget=self.token_budget)  # fmt: skip


# ------------------------------------------------------------------------------------------------- chat


def load_template(path: str | os.PathLike | None = None) -> str:
    """The text of a judging template: ``path``, or the packaged ``prompts/pairwise.txt`` when None."""
    if path is None:
        return resources.files("inform_jax.eval").joinpath("prompts", "pairwise.txt").read_text(encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()


def split_template(template: str) -> tuple[str, str]:
    """``(system, user)`` sections of a template: text after a ``[system]`` line and after a ``[user]`` line
    (anything before the first section is a comment). A template with no section lines is all user message.
    The user section must hold ``{prompt}``, ``{response_a}`` and ``{response_b}``."""
    lines = template.splitlines()
    heads = {line.strip(): i for i, line in enumerate(lines) if line.strip() in ("[system]", "[user]")}
    if not heads:
        system, user = "", template.strip()
    elif "[user]" not in heads:
        raise ValueError("the judging template has a [system] section but no [user] section")
    else:
        u = heads["[user]"]
        s = heads.get("[system]")
        if s is not None and s > u:
            raise ValueError("the judging template's [system] section must come before its [user] section")
        system = "\n".join(lines[s + 1 : u]).strip() if s is not None else ""
        user = "\n".join(lines[u + 1 :]).strip()
    missing = [f"{{{name}}}" for name in PLACEHOLDERS if f"{{{name}}}" not in user]
    if missing:
        raise ValueError(f"the judging template's user message lacks {', '.join(missing)}")
    return system, user


_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def fill_template(text: str, prompt: str, response_a: str, response_b: str) -> str:
    """Replace ``{prompt}``, ``{response_a}``, ``{response_b}`` in one pass (braces in the values stay as they are)."""
    values = {"prompt": prompt, "response_a": response_a, "response_b": response_b}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


_VERDICT_LINE = re.compile(r"verdict\s*:(.*)$", re.IGNORECASE)
_DECORATION = " \t*_`'\"[](){}<>.,!;:"
_VERDICT_WORDS = {"a": "A", "b": "B", "tie": "tie", "response a": "A", "response b": "B"}


def parse_verdict(reply: str) -> str | None:
    """ "A", "B" or "tie" from the last line of ``reply`` holding ``Verdict:`` (case-insensitive; markdown such
    as ``**Verdict: [A]**`` is allowed); None when there is no such line or it names something else."""
    for line in reversed((reply or "").splitlines()):
        match = _VERDICT_LINE.search(line)
        if match:
            value = " ".join(match.group(1).strip(_DECORATION).lower().split())
            return _VERDICT_WORDS.get(value)
    return None


def _excerpt(text: str, limit: int = 400) -> str:
    return repr(text if len(text) <= limit else "..." + text[-limit:])


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise JudgeError(f"POST {req.full_url}: the endpoint redirected ({code}) to {newurl}; refused (the request "
                         "carries the API key; point base_url at the final address)")  # fmt: skip


class ChatJudge:
    """A judge asking an OpenAI-compatible chat-completions endpoint which of two responses is better.

    Each call POSTs ``{"model", "messages": [system, user], "temperature": 0}`` to ``{base_url}/chat/completions``
    with the template's messages filled in (Response A = first, Response B = second) and parses the reply's
    last ``Verdict:`` line: A -> +1, B -> -1, tie -> 0. Only the standard library is used.

    Args:
      base_url: e.g. ``https://api.openai.com/v1`` or a local server's ``http://127.0.0.1:8000/v1``.
      model: the model name the endpoint serves.
      api_key: sent as ``Authorization: Bearer``; default the ``OPENAI_API_KEY`` environment variable (no header
        when neither is set).
      template: the template text (see :func:`split_template`); default ``prompts/pairwise.txt``.
      timeout: seconds per request.
      deadline: seconds for one question across all its attempts and waits (a dead endpoint fails after this).
      max_retries: retries after the first attempt on HTTP 429 / 5xx and connection errors, waiting
        ``backoff * 2**attempt`` seconds (or the server's Retry-After), at most ``max_backoff``.

    Redirects are refused (an error naming the target): a redirected POST would carry the API key to another
    host, or come back as a GET whose answer is not a verdict. A reply's content may be a string or a list of
    text parts (joined); anything else is a JudgeError naming the row.
      on_unparsed: "raise" (a JudgeError quoting the reply) or "tie" (counted in ``unparsed``, with a warning).
      workers: concurrent requests in :meth:`preferences`.
    """

    kind = "chat"
    default_margin = DEFAULT_MARGINS["chat"]

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        template: str | None = None,
        *,
        timeout: float = 60.0,
        deadline: float = 180.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        on_unparsed: str = "raise",
        workers: int = 4,
    ):
        if not model:
            raise ValueError("a chat judge needs model= (the model name the endpoint serves)")
        if on_unparsed not in ("raise", "tie"):
            raise ValueError(f"on_unparsed must be 'raise' or 'tie', got {on_unparsed!r}")
        if max_retries < 0 or workers < 1:
            raise ValueError(f"need max_retries >= 0 and workers >= 1, got {max_retries} and {workers}")
        if not (timeout > 0 and deadline > 0):
            raise ValueError(f"need timeout > 0 and deadline > 0, got {timeout} and {deadline}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.system, self.user = split_template(load_template() if template is None else template)
        self.timeout = timeout
        self.deadline = deadline
        self.max_retries = max_retries
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_unparsed = on_unparsed
        self.workers = workers
        self.unparsed = 0  # replies counted as ties with on_unparsed="tie"
        self._lock = threading.Lock()

    def messages(self, prompt: str, first: str, second: str) -> list[dict[str, str]]:
        user = fill_template(self.user, prompt, first, second)
        system = fill_template(self.system, prompt, first, second)
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]

    def _post(self, body: dict) -> bytes:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        end = time.monotonic() + self.deadline
        for attempt in range(self.max_retries + 1):
            wait = self.backoff * 2**attempt
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                timeout = min(self.timeout, max(end - time.monotonic(), 0.001))
                with self._opener.open(request, timeout=timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as err:
                detail = err.read(500).decode("utf-8", "replace") if err.fp is not None else ""
                last = f"HTTP {err.code} {err.reason}: {detail}".rstrip(": ")
                if err.code != 429 and err.code < 500:
                    raise JudgeError(f"POST {self.url}: {last}") from None
                retry_after = err.headers.get("Retry-After") if err.headers is not None else None
                try:
                    wait = float(retry_after) if retry_after is not None else wait
                except ValueError:
                    pass
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            pause = min(max(wait, 0.0), self.max_backoff)
            if time.monotonic() + pause >= end:
                raise JudgeError(f"POST {self.url}: no answer within the {self.deadline:g} s deadline "
                                 f"({attempt + 1} attempts); last error: {last}")  # fmt: skip
            if attempt < self.max_retries:
                logger.warning("POST %s failed (%s); retry %d of %d", self.url, last, attempt + 1, self.max_retries)
                time.sleep(pause)
        raise JudgeError(f"POST {self.url} failed after {self.max_retries + 1} attempts; last error: {last}")

    def reply(self, prompt: str, first: str, second: str) -> str:
        """The endpoint's answer text to the pairwise question."""
        body = {"model": self.model, "messages": self.messages(prompt, first, second), "temperature": 0}
        raw = self._post(body)
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"{self.url}: not a chat-completions response (no choices[0].message.content): "
                             f"{_excerpt(raw.decode('utf-8', 'replace'))}") from None  # fmt: skip
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            texts = [p if isinstance(p, str) else p.get("text") if isinstance(p, dict) else None for p in content]
            if all(isinstance(t, str) for t in texts):
                return "".join(texts)
        if content is None or isinstance(content, str):
            return content or ""
        raise JudgeError(f"{self.url}: the reply's content is neither text nor a list of text parts: "
                         f"{_excerpt(json.dumps(content))}")  # fmt: skip

    def __call__(self, prompt: str, first: str, second: str) -> float:
        text = self.reply(prompt, first, second)
        found = parse_verdict(text)
        if found is not None:
            return VERDICT_VALUES[found]
        if self.on_unparsed == "raise":
            raise JudgeError(f"{self.url}: no 'Verdict: A', 'Verdict: B' or 'Verdict: tie' line in the judge's "
                             f"reply {_excerpt(text)} (on_unparsed='tie' counts such replies as ties)")  # fmt: skip
        with self._lock:
            self.unparsed += 1
        logger.warning("no verdict in the judge's reply %s; counted as a tie", _excerpt(text, 200))
        return 0.0

    def preferences(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> np.ndarray:
        """+1 / -1 / 0 [N], ``workers`` requests at a time (in order)."""
        n = _check_triples(prompts, firsts, seconds)

        def ask(row: int) -> float:
            try:
                return self(prompts[row], firsts[row], seconds[row])
            except JudgeError as err:
                raise JudgeError(f"row {row} (prompt {prompts[row][:60]!r}): {err}") from None

        if self.workers == 1 or n <= 1:
            return np.array([ask(i) for i in range(n)], np.float64)
        with ThreadPoolExecutor(min(self.workers, n)) as pool:
            return np.array(list(pool.map(ask, range(n))), np.float64)


# ---------------------------------------------------------------------------------------------- factory

SPECS = ('"rm:PATH" (a reward-model folder)', '"chat:BASE_URL" (an OpenAI-compatible endpoint, with model=)',
         '"gold" (the synthetic world\'s gold reward)')  # fmt: skip


def judge_kind(spec: str) -> str:
    """ "rm", "chat" or "gold" for a judge spec; ValueError for anything else."""
    kind, sep, target = spec.partition(":")
    if spec == "gold" or (sep and target and kind in ("rm", "chat")):
        return kind
    raise ValueError(f"unknown judge {spec!r}; expected one of {', '.join(SPECS)}")


def default_margin(spec: str) -> float | None:
    """The CLI's tie margin for a judge spec: 0 for chat judges (preferences are -1 / 0 / +1), 0.05 for the gold
    reward (in [-1, 1]; the lab's margin), None for reward models (their scale is arbitrary: give one)."""
    return DEFAULT_MARGINS[judge_kind(spec)]


def load_judge(spec: str, **kw):
    """A judge from ``spec``: ``"rm:PATH"`` -> :class:`RewardModelJudge` (kw: tokenizer, max_length, batch_size,
    ...), ``"chat:BASE_URL"`` -> :class:`ChatJudge` (kw: model (required), api_key, template, ...), ``"gold"`` ->
    :func:`gold_judge` (kw: world). Keyword arguments that are None are dropped (their defaults apply)."""
    kind = judge_kind(spec)
    target = spec.partition(":")[2]
    kw = {k: v for k, v in kw.items() if v is not None}
    factories = {"rm": (RewardModelJudge, (target,)), "chat": (ChatJudge, (target,)), "gold": (gold_judge, ())}
    factory, args = factories[kind]
    accepted = set(inspect.signature(factory).parameters) - {"path", "base_url"}
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise ValueError(f"judge {spec!r} does not take {', '.join(unknown)}")
    if kind == "chat" and not kw.get("model"):
        raise ValueError(f"judge {spec!r} needs model= (the model name the endpoint serves)")
    return factory(*args, **kw)
