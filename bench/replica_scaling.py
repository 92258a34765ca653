"""Generation throughput over 1, 2, 4 and 8 teacher replicas: the HTTP backend against loopback servers.

python -m bench.replica_scaling [--requests 384] [--tokens 32] [--token-ms 20] [--slots 8]

Each replica is tests/openai_server.py in a process of its own, made to behave like one
vLLM server: it decodes at a fixed delay per generated token and holds at most `--slots`
sequences at once (vLLM's max_num_seqs), queueing the rest. The HTTP backend spreads the
requests round-robin over the replicas' base URLs, as a teacher with several `base_urls` does.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

from resources.backends import Request, SamplingParams
from resources.http_backend import HttpBackend
from tests.openai_server import FakeTeacher, OpenAIServer, reverse_answer

PROJECT_DIR = Path(__file__).resolve().parent.parent


def replica_answer(token_s: float, slots: int):
    """reverse_answer, decoded at token_s per token, with at most `slots` sequences in flight."""
    batch = threading.BoundedSemaphore(slots)

    def answer(messages, body):
        with batch:
            text, finish, top = reverse_answer(messages, body)
            time.sleep(token_s * len(text))  # one token per character
        return text, finish, top

    return answer


def serve(token_s: float, slots: int) -> None:
    with OpenAIServer(FakeTeacher(answer=replica_answer(token_s, slots))) as server:
        print(server.url, flush=True)
        threading.Event().wait()


def measure(urls: list[str], requests: list[Request], params: SamplingParams, concurrency: int) -> float:
    backend = HttpBackend(urls, model="teacher", concurrency=concurrency, timeout_s=120)
    backend.complete(requests[: len(urls)], params)  # warm up: connections to every replica
    started = time.perf_counter()
    completions = backend.complete(requests, params)
    seconds = time.perf_counter() - started
    assert all(c.ok for c in completions), [c.error for c in completions if not c.ok][:3]
    return sum(c.num_tokens for c in completions) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=384)
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per request")
    parser.add_argument("--token-ms", type=float, default=20.0, help="decode time per token, per sequence")
    parser.add_argument("--slots", type=int, default=8, help="sequences a replica decodes at once")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.token_ms / 1000, args.slots)

    # Each replica in a process of its own, so replicas do not share one interpreter lock.
    command = [sys.executable, "-m", "bench.replica_scaling", "--serve", "--token-ms", str(args.token_ms),
               "--slots", str(args.slots)]  # fmt: skip
    servers = [
        subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True) for _ in range(max(args.replicas))
    ]
    try:
        urls = [s.stdout.readline().strip() for s in servers]  # type: ignore[union-attr]
        prompts = [f"{i:05d} " + "abcdefghijklmnopqrstuvwxyz0123456789"[: args.tokens] for i in range(args.requests)]
        requests = [Request([{"role": "user", "content": p}]) for p in prompts]
        params = SamplingParams(max_new_tokens=args.tokens)
        concurrency = max(args.replicas) * args.slots  # enough to fill every slot of the largest fleet
        rates = {n: measure(urls[:n], requests, params, concurrency) for n in args.replicas}
    finally:
        for server in servers:
            server.kill()
            server.wait()

    ideal_one = args.slots / (args.token_ms / 1000)
    print(f"{args.requests} requests x {args.tokens} tokens; a replica decodes {args.slots} sequences at once, "
          f"{args.token_ms:g} ms per token (at most {ideal_one:.0f} tokens/s per replica); "
          f"client concurrency {concurrency}")  # fmt: skip
    print("| replicas | tokens/s | ratio to 1 | ideal |")
    print("| --- | --- | --- | --- |")
    for n, rate in rates.items():
        print(f"| {n} | {rate:.0f} | {rate / rates[args.replicas[0]]:.2f}x | {n / args.replicas[0]:.0f}x |")


if __name__ == "__main__":
    main()
