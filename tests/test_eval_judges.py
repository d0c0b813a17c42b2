"""Pluggable judges for win rates: a chat judge against a local HTTP server, a reward-model judge against the
model's own rewards, the gold judge, and `inform-jax win-rate` end to end."""

import contextlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jax
import numpy as np
import pytest
from flax import nnx

from inform_jax.cli import main
from inform_jax.data.preference import PreferenceDataError, PreferencePair
from inform_jax.data.tokenize import tokenize_pairs
from inform_jax.eval import (
    ChatJudge,
    JudgeError,
    RewardModelJudge,
    ScoreJudge,
    compare,
    compare_scores,
    load_judge,
    load_template,
    parse_verdict,
    win_rate_report,
)
from inform_jax.eval.judges import split_template
from inform_jax.models.config import DecoderConfig
from inform_jax.models.reward_model import HeadConfig, RewardModel, save_reward_model
from inform_jax.world.files import write_jsonl
from inform_jax.world.world import SyntheticWorld

MARKER = "MARKER"
_SECTION = re.compile(r"\[Response (A|B)\]\n(.*?)\n\[End of Response \1\]", re.DOTALL)


def chat_reply(text):
    return 200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


def responses_shown(body):
    """{"A": ..., "B": ...} as the packaged template shows them in the user message."""
    return dict(_SECTION.findall(body["messages"][-1]["content"]))


def fair(body, k):
    """Prefers the response that holds the marker word; ties when both or neither do."""
    shown = responses_shown(body)
    a, b = (MARKER in shown[side] for side in "AB")
    choice = "A" if a and not b else "B" if b and not a else "tie"
    return chat_reply(f"Response A and Response B differ in one word.\n\n**Verdict: {choice}**")


@contextlib.contextmanager
def chat_server(answer, limit=100):
    """A local chat-completions endpoint: ``answer(body, k) -> (status, text)`` for the k-th request (1-based);
    requests beyond ``limit`` get a 400 (not retried), so a runaway client stops. Yields (base_url, requests)."""
    requests, lock = [], threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                k = len(requests)
            status, text, *extra = answer(body, k) if k <= limit else (400, "request limit reached")
            payload = text.encode()
            try:
                self.send_response(status)
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a timeout or deadline test): nobody is left to answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def chat_judge(url, **kw):
    return ChatJudge(url, "judge-model", api_key="sk-test", timeout=5, backoff=0.0, **kw)


PROMPTS = ["name a fruit", "count to two", "say hi", "name a color"]
A = [f"apple {MARKER}", "one two", f"hi {MARKER}", "red"]
B = ["banana", f"one two {MARKER}", "hello", "blue"]  # A: win, lose, win, tie


# ------------------------------------------------------------------------------------------- chat judge


def test_parse_verdict_takes_the_last_verdict_line():
    assert parse_verdict("Verdict: A") == "A"
    assert parse_verdict("some reasoning\n**Verdict: [B]**") == "B"
    assert parse_verdict("verdict: TIE.") == "tie"
    assert parse_verdict("Verdict: A\nOn reflection, no.\nVerdict: Response B") == "B"
    assert parse_verdict("Verdict: a tie") is None  # neither A, B nor tie
    assert parse_verdict("A is better") is None
    assert parse_verdict("Verdict: B\nVerdict: unsure") is None  # only the last verdict line counts


def test_fair_chat_judge_counts_wins_and_losses_in_both_orders():
    with chat_server(fair) as (url, requests):
        judge = chat_judge(url, workers=3)
        np.testing.assert_array_equal(judge.preferences(PROMPTS, A, B), [1, -1, 1, 0])
        np.testing.assert_array_equal(judge.preferences(PROMPTS, B, A), [-1, 1, -1, 0])
        del requests[:]
        result = compare(judge, PROMPTS, A, B, margin=0.0)
        assert len(requests) == 8  # every item in both orders
        swapped = compare(judge, PROMPTS, B, A, margin=0.0)
        report = win_rate_report(judge, PROMPTS, A, B, margin=0.0)
    assert (result["win"], result["tie"], result["lose"], result["n"]) == (0.5, 0.25, 0.25, 4)
    assert result["win_rate"] == pytest.approx(0.625)
    assert (swapped["win"], swapped["tie"], swapped["lose"]) == (0.25, 0.25, 0.5)
    assert [item["verdict"] for item in report["items"]] == ["win", "lose", "win", "tie"]
    assert [(item["a_first"], item["b_first"]) for item in report["items"]][:2] == [(1.0, -1.0), (-1.0, 1.0)]
    assert {k: report[k] for k in result} == result


def test_position_biased_chat_judge_gives_only_ties():
    with chat_server(lambda body, k: chat_reply("The first one reads better.\nVerdict: A")) as (url, requests):
        judge = chat_judge(url)
        assert judge(PROMPTS[0], A[0], B[0]) == 1.0 and judge(PROMPTS[0], B[0], A[0]) == 1.0  # one order misleads
        result = compare(judge, PROMPTS, A, B, margin=0.0)
    assert (result["win"], result["tie"], result["lose"]) == (0.0, 1.0, 0.0)
    assert result["win_rate"] == 0.5 and len(requests) == 2 + 2 * len(PROMPTS)


def test_tie_answers_are_ties():
    with chat_server(lambda body, k: chat_reply("Both are equally good.\nVerdict: tie")) as (url, _):
        judge = chat_judge(url)
        np.testing.assert_array_equal(judge.preferences(PROMPTS, A, B), np.zeros(4))
        assert compare(judge, PROMPTS, A, B, margin=0.0)["tie"] == 1.0


def test_request_carries_model_template_responses_and_bearer_key(monkeypatch):
    prompt = "write {response_a} literally"  # placeholders inside values are not substituted again
    with chat_server(fair) as (url, requests):
        assert chat_judge(url)(prompt, "first {prompt}", f"second {MARKER}") == -1.0
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
        ChatJudge(url + "/", "other-model", timeout=5)(prompt, "x", "y")
        monkeypatch.delenv("OPENAI_API_KEY")
        ChatJudge(url, "other-model", timeout=5)(prompt, "x", "y")
    request = requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "helpfulness" in body["messages"][0]["content"].lower()
    user = body["messages"][1]["content"]
    assert "\n" + prompt + "\n" in user and "{prompt}" not in user.replace("first {prompt}", "")
    assert responses_shown(body) == {"A": "first {prompt}", "B": f"second {MARKER}"}
    assert "Verdict: tie" in user  # the answer format the template asks for
    system, template_user = split_template(load_template())
    assert body["messages"][0]["content"] == system and template_user.splitlines()[0] in user
    assert requests[1]["path"] == "/v1/chat/completions" and requests[1]["body"]["model"] == "other-model"
    assert requests[1]["headers"]["Authorization"] == "Bearer sk-from-env"
    assert "Authorization" not in requests[2]["headers"]


def test_server_errors_are_retried_then_reported_with_the_url():
    with chat_server(lambda body, k: (500, "boom") if k == 1 else (429, "slow down") if k == 2 else
                     chat_reply("Verdict: B")) as (url, requests):  # fmt: skip
        assert chat_judge(url, max_retries=3)("x", "a", "b") == -1.0
        assert len(requests) == 3
    with chat_server(lambda body, k: (500, "internal trouble")) as (url, requests):
        with pytest.raises(JudgeError, match=re.escape(f"POST {url}/chat/completions failed after 3 attempts")) as err:
            chat_judge(url, max_retries=2)("x", "a", "b")
        assert "HTTP 500" in str(err.value) and "internal trouble" in str(err.value) and len(requests) == 3
    with chat_server(lambda body, k: (401, "bad key")) as (url, requests):
        with pytest.raises(JudgeError, match=r"/v1/chat/completions: HTTP 401.*bad key"):
            chat_judge(url, max_retries=2)("x", "a", "b")
        assert len(requests) == 1  # client errors are not retried
    with socket.socket() as s:  # a port nobody listens on: connection errors are retried, then reported
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JudgeError, match=rf"127.0.0.1:{port}/v1/chat/completions failed after 2 attempts"):
        chat_judge(f"http://127.0.0.1:{port}/v1", max_retries=1)("x", "a", "b")


def test_unparseable_reply_raises_or_counts_as_tie():
    with chat_server(lambda body, k: chat_reply("Both responses have merit.")) as (url, _):
        with pytest.raises(JudgeError, match=r"no 'Verdict: A'.*'Both responses have merit.'"):
            chat_judge(url)("x", "a", "b")
        judge = chat_judge(url, on_unparsed="tie")
        np.testing.assert_array_equal(judge.preferences(PROMPTS, A, B), np.zeros(4))
        assert judge.unparsed == 4
    with chat_server(lambda body, k: (200, '{"error": "no choices"}')) as (url, _):
        with pytest.raises(JudgeError, match="not a chat-completions response"):
            chat_judge(url)("x", "a", "b")


# --------------------------------------------------------------------------------------------- score judges


def test_score_judge_scores_each_response_once_and_is_antisymmetric():
    calls = []

    def score_fn(prompts, responses):
        calls.append(len(responses))
        return [len(r) + (0.5 if p == "x" else 0.0) for p, r in zip(prompts, responses, strict=True)]

    judge = ScoreJudge(score_fn)
    result = compare(judge, ["x", "y", "x"], ["aaa", "b", "cc"], ["a", "bbbb", "cc"], margin=0.5)
    assert calls == [5]  # one batched call over distinct (prompt, response) rows; "cc" under "x" once
    assert result == compare_scores([3, 1, 2], [1, 4, 2], margin=0.5)
    assert judge("x", "aaa", "a") == 2.0 == -judge("x", "a", "aaa")
    with pytest.raises(JudgeError, match="score_fn gave nan"):
        ScoreJudge(lambda p, r: [float("nan")] * len(r))("x", "a", "b")


def tiny_rm(world, seed=0):
    config = DecoderConfig(
        vocab_size=world.vocab_size, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
    )
    return RewardModel.create(config, HeadConfig(kind="scalar"), rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld()


def world_rows(world, n, seed):
    rng = np.random.default_rng(seed)
    prompts = list(dict.fromkeys(world.sample_prompts(rng, 4 * n)))[:n]  # distinct: files pair rows by prompt
    assert len(prompts) == n
    a = [world.generate_response(rng, p, "correct") for p in prompts]
    b = [world.generate_response(rng, p, ("overlong", "partial")[i % 2]) for i, p in enumerate(prompts)]
    return prompts, a, b


def test_reward_model_judge_matches_the_models_own_rewards(tmp_path, world):
    model = tiny_rm(world)
    save_reward_model(model, str(tmp_path / "rm"))
    world.save_tokenizer(tmp_path / "rm")
    judge = load_judge(f"rm:{tmp_path / 'rm'}", batch_size=3)
    assert isinstance(judge, RewardModelJudge) and judge.default_margin is None
    prompts, a, b = world_rows(world, 7, seed=0)
    prefs = judge.preferences(prompts, a, b)

    pairs = [PreferencePair(p, x, y) for p, x, y in zip(prompts, a, b, strict=True)]
    arrays, _ = tokenize_pairs(pairs, judge.tokenizer, "auto")  # the pairs as the reward model was trained on them
    graphdef, state = nnx.split(model)  # the in-memory model, before saving and loading
    rewards = jax.jit(lambda s, ids, mask: nnx.merge(graphdef, s)(ids, mask).reward)
    r_a = np.asarray(rewards(state, arrays["chosen_input_ids"], arrays["chosen_attention_mask"]))
    r_b = np.asarray(rewards(state, arrays["rejected_input_ids"], arrays["rejected_attention_mask"]))
    assert np.abs(r_a - r_b).max() > 1e-3  # the parity below is not between near-zero numbers
    np.testing.assert_allclose(prefs, r_a - r_b, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(judge.preferences(prompts, b, a), -prefs)  # antisymmetric
    # A margin between two of the gaps, not at one of them (the median of 7): a gap equal to the margin would
    # be a win or a tie by float rounding between the judge's batches and these.
    gaps = np.sort(np.abs(r_a - r_b))
    margin = float((gaps[3] + gaps[4]) / 2)
    assert compare(judge, prompts, a, b, margin=margin) == compare_scores(r_a, r_b, margin=margin)


def test_gold_judge_and_judge_specs(world):
    prompts, a, b = world_rows(world, 6, seed=1)
    judge = load_judge("gold", world=world)
    gold_a = [world.gold_reward_text(p, r) for p, r in zip(prompts, a, strict=True)]
    gold_b = [world.gold_reward_text(p, r) for p, r in zip(prompts, b, strict=True)]
    np.testing.assert_allclose(judge.preferences(prompts, a, b), np.subtract(gold_a, gold_b))
    assert compare(judge, prompts, a, b, margin=0.05) == compare_scores(gold_a, gold_b, margin=0.05)
    with pytest.raises(ValueError, match="unknown judge 'gpt4'"):
        load_judge("gpt4")
    with pytest.raises(ValueError, match="needs model="):
        load_judge("chat:http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="does not take model"):
        load_judge("gold", model="gpt-4")
    assert isinstance(load_judge("chat:http://127.0.0.1:9/v1", model="m", api_key=None), ChatJudge)


# ------------------------------------------------------------------------------------------------------ CLI


def test_win_rate_command_with_a_chat_judge(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path_a, path_b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "report.json"
    write_jsonl(str(path_a), [{"prompt": p, "response": r} for p, r in zip(PROMPTS, A, strict=True)])
    rows_b = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, B, strict=True)][::-1]  # another order
    write_jsonl(str(path_b), [*rows_b, {"prompt": "only in b", "response": "extra"}])
    with chat_server(fair) as (url, requests):
        code = main(["win-rate", "--a", str(path_a), "--b", str(path_b), "--judge", f"chat:{url}",
                     "--model", "judge-model", "--out", str(out)])  # fmt: skip
    assert code == 0 and len(requests) == 8
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
    assert (summary["win"], summary["tie"], summary["lose"], summary["n"]) == (0.5, 0.25, 0.25, 4)
    assert summary["win_rate"] == 0.625 and summary["margin"] == 0.0 and "1 rows answer prompts" in printed
    report = json.loads(out.read_text())
    by_prompt = {item["prompt"]: item for item in report["items"]}
    assert [by_prompt[p]["verdict"] for p in PROMPTS] == ["win", "lose", "win", "tie"]
    assert by_prompt["count to two"]["response_b"] == B[1] and report["model"] == "judge-model"


def test_win_rate_command_rejects_unpaired_files_and_missing_margin(tmp_path, world):
    path_a, path_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(str(path_a), [{"prompt": p, "response": r} for p, r in zip(PROMPTS, A, strict=True)])
    write_jsonl(str(path_b), [{"prompt": p, "response": r} for p, r in zip(PROMPTS[:3], B[:3], strict=True)])
    args = ["win-rate", "--a", str(path_a), "--b", str(path_b), "--judge", "gold"]
    with pytest.raises(PreferenceDataError, match=r"b.jsonl: no response to the prompt 'name a color' of .*a.jsonl"):
        main(args)
    write_jsonl(
        str(path_b), [{"prompt": p, "response": r} for p, r in zip(PROMPTS + PROMPTS[:1], B + B[:1], strict=True)]
    )
    with pytest.raises(PreferenceDataError, match=r"b.jsonl: rows 0 and 4 answer the same prompt 'name a fruit'"):
        main(args)
    with pytest.raises(SystemExit, match="--margin is required for a reward-model judge"):
        main(["win-rate", "--a", str(path_a), "--b", str(path_b), "--judge", f"rm:{tmp_path}"])
    with pytest.raises(SystemExit, match="--model is required"):
        main(["win-rate", "--a", str(path_a), "--b", str(path_b), "--judge", "chat:http://127.0.0.1:9/v1"])


def test_win_rate_command_with_the_gold_judge(tmp_path, capsys, world):
    prompts, a, b = world_rows(world, 8, seed=2)
    path_a, path_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(str(path_a), [{"prompt": p, "response": r} for p, r in zip(prompts, a, strict=True)])
    write_jsonl(str(path_b), [{"prompt": p, "response": r} for p, r in zip(prompts, b, strict=True)])
    assert main(["win-rate", "--a", str(path_a), "--b", str(path_b), "--judge", "gold"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
    gold_a = [world.gold_reward_text(p, r) for p, r in zip(prompts, a, strict=True)]
    gold_b = [world.gold_reward_text(p, r) for p, r in zip(prompts, b, strict=True)]
    expected = compare_scores(gold_a, gold_b, margin=0.05)
    assert summary["margin"] == 0.05 and {k: summary[k] for k in expected} == expected


def test_a_redirect_is_refused_and_the_key_never_reaches_the_other_host():
    with chat_server(lambda body, k: chat_reply("Verdict: A")) as (other, other_requests):
        with chat_server(lambda body, k: (302, "moved", {"Location": other + "/chat/completions"})) as (url, _):
            with pytest.raises(JudgeError, match=r"redirected \(302\).*refused"):
                chat_judge(url)("p", "a", "b")
    assert other_requests == []  # neither the key nor the question went to the redirect's target


def test_a_dead_endpoint_fails_within_the_deadline():
    def slow(body, k):
        time.sleep(2.0)
        return chat_reply("Verdict: A")

    with chat_server(slow) as (url, _):
        judge = ChatJudge(url, "m", api_key="k", timeout=0.3, deadline=1.0, max_retries=10, backoff=0.1)
        start = time.monotonic()
        with pytest.raises(JudgeError, match="deadline"):
            judge("p", "a", "b")
        assert time.monotonic() - start < 2.0


def test_content_parts_are_joined_and_other_content_names_the_row():
    def parts(body, k):
        content = [{"type": "text", "text": "Fine. "}, {"type": "text", "text": "Verdict: B"}] if k == 1 else 7
        return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})

    with chat_server(parts) as (url, _):
        judge = chat_judge(url, workers=1)
        assert judge("p", "a", "b") == -1.0
        with pytest.raises(JudgeError, match=r"row 0 \(prompt 'q'\).*neither text nor a list"):
            judge.preferences(["q"], ["a"], ["b"])
