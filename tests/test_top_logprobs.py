"""Top-k log-probabilities end to end: the backends' TopK, the cache's bytes, the frame's numeric columns."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from distill_assets.generation import COMPLETION_SCHEMA, generate_completions, summed, write_completions
from distill_assets.spec import TaskSpec, TeacherSpec
from resources.backends import Completion, Request, SamplingParams, TeacherBackend, TokenLogprob, TopK
from resources.cached_backend import CachedBackend
from resources.completion_codec import MAGIC, decode_completion, encode_completion
from resources.generation_cache import GenerationCache
from resources.http_backend import HttpBackend, parse_answer, parse_chat_completion
from resources.retry import RetryableError
from resources.transformers_backend import TransformersBackend
from tests.generate_child import demo_prompts
from tests.openai_server import FakeTeacher, OpenAIServer

TASK = TaskSpec(name="demo", source="-")


def with_ids(steps: int, k: int, vocab: int, seed: int = 0) -> TopK:
    rng = np.random.default_rng(seed)
    logprobs = np.sort(-rng.exponential(2.0, (steps, k)).astype(np.float32), axis=1)[:, ::-1]
    return TopK(rng.integers(0, vocab, (steps, k)), logprobs)


@pytest.mark.parametrize("vocab", [50_000, 128_256, 2**31 - 1])
def test_the_cache_row_round_trips_ids_exactly_and_logprobs_to_float16(vocab):
    top = with_ids(300, 20, vocab)
    completion = Completion("text", 300, "length", top_logprobs=top)
    data = encode_completion(completion)
    assert data.startswith(MAGIC)
    back = decode_completion(data)
    assert back == completion and back.top_logprobs.ids.dtype == np.int32
    # 3-byte ids and float16 log-probs: 100 bytes a token at top-20 below 2**24 ids, 120 above 2**16 - 1
    per_token = 20 * ({50_000: 2, 128_256: 3}.get(vocab, 4) + 2)
    assert 300 * per_token < len(data) < 300 * per_token + 200
    assert decode_completion(memoryview(data)) == completion  # what a Postgres driver returns


def test_float16_keeps_log_probabilities_to_a_thousandth():
    exact = -np.geomspace(1e-4, 30, 400).reshape(20, 20).astype(np.float32)
    stored = encode_completion(Completion("", 20, "length", top_logprobs=TopK(np.zeros((20, 20)), exact)))
    kept = decode_completion(stored)
    relative = np.abs(kept.top_logprobs.logprobs.astype(np.float32) - exact) / np.abs(exact)
    assert relative.max() < 1e-3


def test_padding_tokens_and_failures_round_trip():
    ragged = TopK.from_steps([[-0.1, -2.0, -3.0], [-0.5]], tokens=[["a", "b", "c"], ["é"]])
    assert ragged.ids.tolist() == [[-1, -1, -1], [-1, -1, -1]] and np.isnan(ragged.logprobs[1, 1:]).all()
    padded_ids = TopK.from_steps([[-0.1, -2.0], [-0.5]], ids=[[7, 9], [70_000]])
    empty = TopK(np.zeros((0, 5)), np.zeros((0, 5)))
    for completion in (
        Completion("abc", 2, "stop", top_logprobs=ragged),
        Completion("ab", 2, "stop", top_logprobs=padded_ids),
        Completion("", 0, "stop", top_logprobs=empty),
        Completion("plain", 1, "stop"),
        Completion.failed("HTTP 500"),
    ):
        assert decode_completion(encode_completion(completion)) == completion
    assert padded_ids.entries() == (
        (TokenLogprob(None, pytest.approx(-0.1, abs=1e-3), 7), TokenLogprob(None, -2.0, 9)),
        (TokenLogprob(None, -0.5, 70_000),),
    )


def test_rows_in_the_first_json_format_still_decode():
    old = {
        "text": "ab", "num_tokens": 2, "finish_reason": "stop", "error": None,
        "top_logprobs": [
            [{"token": "a", "logprob": -0.25, "token_id": 5}, {"token": "b", "logprob": -1.5, "token_id": 6}],
            [{"token": "b", "logprob": -0.5, "token_id": 6}, {"token": "c", "logprob": -2.0, "token_id": 7}],
        ],
    }  # fmt: skip
    for row in (json.dumps(old), json.dumps(old).encode()):
        top = decode_completion(row).top_logprobs
        assert top.has_ids and top.ids.tolist() == [[5, 6], [6, 7]]
        assert top.logprobs.tolist() == [[-0.25, -1.5], [-0.5, -2.0]]
    http = {**old, "top_logprobs": [[{"token": "a", "logprob": -0.25, "token_id": None}]]}
    assert decode_completion(json.dumps(http)).top_logprobs.tokens == (("a",),)
    assert decode_completion(json.dumps({**old, "top_logprobs": None})) == Completion("ab", 2, "stop")


class Scripted(TeacherBackend):
    """Answers each request with a fixed kind of top-k, and records how many requests each call brought."""

    name = "scripted"

    def __init__(self, kind: str):
        self.kind, self.calls = kind, []

    def complete(self, requests, params, progress=None, on_completion=None):
        self.calls.append(len(requests))
        out = []
        for r in requests:
            if r.sample_index == 2:
                out.append(Completion.failed("gave up"))
            elif self.kind == "ids":
                out.append(Completion("xyz", 3, "length", top_logprobs=with_ids(3, params.top_logprobs, 1000)))
            elif self.kind == "tokens":
                top = TopK.from_steps([[-0.1, -1.0], [-0.2]], tokens=[["x", "y"], ["z"]])
                out.append(Completion("xz", 2, "stop", top_logprobs=top))
            else:
                out.append(Completion("xyz", 3, "length"))
            if on_completion:
                on_completion(len(out) - 1, out[-1])
        return out


def teacher(top_logprobs: int, n: int = 3) -> TeacherSpec:
    generation = {"top_logprobs": top_logprobs, "n": n, "temperature": 1.0}
    return TeacherSpec(name="t", model="m", tasks=["demo"], generation=generation)


def test_the_frame_holds_numeric_top_k_columns():
    frame = generate_completions(Scripted("ids"), demo_prompts(4), teacher(5), TASK)
    assert frame.schema == pl.Schema(COMPLETION_SCHEMA)
    assert frame.schema["topk_ids"] == pl.List(pl.List(pl.Int32))
    assert frame.schema["topk_logprobs"] == pl.List(pl.List(pl.Float16))
    answered = frame.filter(pl.col("error").is_null())
    assert answered["topk_ids"].list.len().to_list() == [3] * answered.height
    assert answered["topk_ids"].list.eval(pl.element().list.len()).explode().unique().to_list() == [5]
    assert answered["topk_tokens"].null_count() == answered.height
    failed = frame.filter(pl.col("error").is_not_null())
    assert failed.height == 4 and failed.select(pl.col("^topk_.*$").null_count()).row(0) == (4, 4, 4)


def test_a_backend_without_ids_fills_tokens_and_no_top_k_fills_nothing():
    strings = generate_completions(Scripted("tokens"), demo_prompts(2), teacher(2, n=1), TASK)
    assert strings["topk_ids"].null_count() == 2
    assert strings["topk_tokens"].to_list() == [[["x", "y"], ["z"]]] * 2
    first, second = pytest.approx(-0.1, abs=1e-3), pytest.approx(-0.2, abs=1e-3)
    assert strings["topk_logprobs"].to_list() == [[[first, -1.0], [second]]] * 2
    plain = generate_completions(Scripted("none"), demo_prompts(2), teacher(0, n=1), TASK)
    assert plain.select(pl.col("^topk_.*$").null_count()).row(0) == (2, 2, 2)


def test_streaming_writes_one_row_group_per_chunk_and_asks_one_chunk_at_a_time(tmp_path):
    backend = Scripted("ids")
    path = write_completions(backend, demo_prompts(7), teacher(4), TASK, tmp_path / "out.parquet", chunk_rows=5)
    assert pq.ParquetFile(path).num_row_groups == math.ceil(7 * 3 / 5) and backend.calls == [5, 5, 5, 5, 1]
    streamed = pl.read_parquet(path)
    whole = generate_completions(Scripted("ids"), demo_prompts(7), teacher(4), TASK)
    assert streamed.drop("topk_ids", "topk_logprobs").equals(whole.drop("topk_ids", "topk_logprobs"))
    assert streamed.schema == whole.schema and not list(tmp_path.glob("*.partial"))


def test_the_cached_backend_counts_add_up_over_chunks(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    counts = []

    def run() -> dict:
        counts.clear()
        backend = CachedBackend(Scripted("ids"), cache, "scripted")
        write_completions(
            backend, demo_prompts(7), teacher(4), TASK, tmp_path / "out.parquet", chunk_rows=5,
            on_chunk=lambda _: counts.append(backend.stats.metadata()),
        )  # fmt: skip
        return summed(counts)

    first, again = run(), run()
    cache.close()
    assert (first["requests"], first["requests_sent"], first["cached_hits"], first["failed"]) == (21, 21, 0, 7)
    assert (again["requests_sent"], again["cached_hits"]) == (7, 14)  # failed answers are not cached


def test_vllm_token_ids_over_http_become_ids():
    payload = {"choices": [{"message": {"content": "ab"}, "finish_reason": "stop", "logprobs": {"content": [
        {"token": "token_id:5", "logprob": -0.1, "top_logprobs": [{"token": "token_id:5", "logprob": -0.1},
                                                                  {"token": "token_id:9", "logprob": -3.0}]},
    ]}}]}  # fmt: skip
    top = parse_chat_completion(payload).top_logprobs
    assert top.has_ids and top.ids.tolist() == [[5, 9]]

    def answer(messages, body):
        return "ab", "stop", [[("token_id:97", -0.1), ("token_id:98", -2.5)], [("token_id:98", -0.2)]]

    with OpenAIServer(FakeTeacher(answer=answer)) as server:
        backend = HttpBackend([server.url], model="m")
        frame = generate_completions(backend, demo_prompts(2), teacher(2, n=1), TASK)
    assert frame["topk_ids"].to_list() == [[[97, 98], [98]]] * 2 and frame["topk_tokens"].null_count() == 2


def _chat_body(steps: list[list[tuple[str, float | None]]]) -> bytes:
    content = [{"token": s[0][0], "logprob": s[0][1], "top_logprobs": [{"token": t, "logprob": lp} for t, lp in s]}
               for s in steps]  # fmt: skip
    choice = {"message": {"content": "answer"}, "finish_reason": "stop", "logprobs": {"content": content}}
    return json.dumps({"choices": [choice]}).encode()


def test_the_parser_fills_ragged_steps_and_tells_ids_from_strings():
    ragged = [[("token_id:7", -0.1), ("token_id:123456", -2.0), ("token_id:0", -3.0)], [("token_id:9", -0.5)]]
    top = parse_answer(_chat_body(ragged), chat=True, url="u").top_logprobs
    assert top == TopK.from_steps([[-0.1, -2.0, -3.0], [-0.5]], ids=[[7, 123456, 0], [9]])
    assert top.ids.tolist() == [[7, 123456, 0], [9, -1, -1]] and np.isnan(top.logprobs[1, 1:]).all()
    # One alternative that is not an id keeps every step's strings, as they came.
    mixed = [[("token_id:7", -0.1), ("token_id:x", -2.0)], [("token_id:9", -0.5), ("\n", -1.0)]]
    top = parse_answer(_chat_body(mixed), chat=True, url="u").top_logprobs
    assert not top.has_ids and top.tokens == (("token_id:7", "token_id:x"), ("token_id:9", "\n"))
    strings = [[("é", -0.25), (" the", -1.5)], [("token_id:3", -0.5), ("b", -0.75)]]
    top = parse_answer(_chat_body(strings), chat=True, url="u").top_logprobs
    assert top.tokens == (("é", " the"), ("token_id:3", "b")) and top.logprobs.tolist() == [
        [-0.25, -1.5],
        [-0.5, -0.75],
    ]


def test_an_alternative_without_its_log_probability_is_a_malformed_answer():
    for missing in (None, float("nan")):
        with pytest.raises(RetryableError, match="malformed response body"):
            parse_answer(_chat_body([[("a", -0.1), ("b", missing)]]), chat=True, url="u")


@pytest.fixture(scope="module")
def local(tiny_teacher) -> TransformersBackend:
    backend = TransformersBackend.load(str(tiny_teacher), torch.device("cpu"), torch.float32, batch_size=4)
    backend.model.generation_config.suppress_tokens = None  # the model's own distribution, every token in it
    return backend


def reference_top_k(backend: TransformersBackend, prompt, new_ids: list[int], k: int):
    """The top-k of the full-vocabulary log-softmax at each generated position, from one forward pass."""
    prompt_ids = backend.encode([prompt])[0]
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt_ids + new_ids])).logits[0, len(prompt_ids) - 1 : -1]
    return logits.float().log_softmax(-1).topk(k, dim=-1)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_transformers_top_k_matches_the_full_logits(local, temperature):
    prompts = [[{"role": "user", "content": p}] for p in ("abc", "a much longer prompt here", "xy", "dates", "q")]
    params = SamplingParams(max_new_tokens=6, temperature=temperature, top_logprobs=5)
    for prompt, completion in zip(prompts, local.complete([Request(p) for p in prompts], params)):
        [new_ids] = local.generate_ids(local.encode([prompt]), params)  # sample 0, as the completion is
        reference = reference_top_k(local, prompt, new_ids, 5)
        top = completion.top_logprobs
        assert len(top) == len(new_ids) and (top.ids == reference.indices.numpy()).all()
        # the model's own distribution, before temperature: float16 of the reference
        np.testing.assert_allclose(top.logprobs.astype(np.float32), reference.values.numpy(), rtol=1e-3, atol=1e-3)


def test_each_sample_is_seeded_from_its_index_alone_or_in_a_batch(local):
    prompt = [{"role": "user", "content": "abc"}]
    others = [Request([{"role": "user", "content": f"other {i}"}], i % 3) for i in range(5)]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=11)
    samples = [Request(prompt, s) for s in range(4)]
    alone = [local.complete([r], params)[0].text for r in samples]
    batched = [c.text for c in local.complete([*others[:2], *samples, *others[2:]], params)][2:6]
    assert batched == alone
    assert len(set(alone)) > 1  # the samples differ from one another
    assert [c.text for c in local.complete(samples, SamplingParams(8, 1.0, seed=12))] != alone


def test_a_requests_seed_is_its_own_and_independent_of_other_prompts():
    params = SamplingParams(temperature=1.0, seed=3)
    chat = [{"role": "user", "content": "Reverse the letters: abc"}]
    assert params.seed_for(0, chat) == params.seed_for(0, [dict(m) for m in chat])  # a pure function
    seeds = {params.seed_for(s, p) for s in range(4) for p in (chat, "raw text", [1, 2, 3])}
    assert len(seeds) == 12  # every (sample, prompt) draws apart: no stream shared across prompts
    assert all(0 <= s < 2**31 for s in seeds)
    assert SamplingParams(temperature=1.0, seed=4).seed_for(0, chat) != params.seed_for(0, chat)


def test_a_body_only_python_json_reads_is_parsed_the_same_way():
    """-Infinity (what Python's json writes for a log-probability of -inf) is not JSON: the strict decoder refuses
    it and the answer is read by Python's json into the same structs, fields checked the same."""
    top = parse_answer(_chat_body([[("a", -0.5), ("b", float("-inf"))]]), chat=True, url="u").top_logprobs
    assert top.tokens == (("a", "b"),) and top.logprobs.tolist() == [[-0.5, float("-inf")]]
    wrong = json.dumps({"choices": [{"message": {"content": 3}}], "x": float("inf")}).encode()
    with pytest.raises(RetryableError, match=r"malformed response body.*ValidationError"):
        parse_answer(wrong, chat=True, url="u")
    with pytest.raises(RetryableError, match="malformed response body"):
        parse_answer(_chat_body([[("a", -0.5)]])[:-20], chat=True, url="u")  # truncated
