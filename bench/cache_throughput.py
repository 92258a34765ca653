"""The pipeline's cached HTTP client against the same client without its cache and a bare aiohttp client.

python -m bench.cache_throughput [--requests 2560] [--concurrency 64] [--latency 0.05] [--tokens 64] [--top-logprobs 20]

A loopback OpenAI-compatible server (aiohttp, in a process of its own) answers each chat request
after `--latency` seconds with a `--tokens`-token completion carrying the top `--top-logprobs`
log-probabilities of every token. Side by side, in alternation (each round starting with the next
variant), `--rounds` times (the median is printed), at `--concurrency` requests in flight:

- cached: the pipeline's client, CachedBackend + HttpBackend + the SQLite generation cache;
- before: the same with the cache as it was, each answer encoded and committed inside `put`, on
  the event loop (`SynchronousCache` below reproduces it);
- no cache: HttpBackend alone;
- bare: aiohttp, a semaphore, POST and read the whole body (no parsing): the transport's ceiling;
- bare_json: the same, and each body decoded by msgspec (the pipeline's JSON library) to take the
  answer's text: the least any client that reads its answers does. This is the fair bare client
  (the pipeline must decode the JSON to have the answer at all), so the goal's "bare" is this one;
  `bare` is printed beside it to show what the decoding itself costs;
- cached_pg (with `--postgres URL`): the pipeline's client with the Postgres cache (a table dropped afterwards).

Both bare clients encode their requests with msgspec too. Goals: cached >= 0.9x no cache and
>= 0.9x bare_json. The last line reads `cache_throughput: cached=<r> before=<r> no_cache=<r>
bare=<r> bare_json=<r> cached/no_cache=<x> cached/bare_json=<x> cached/bare=<x>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec

from resources.backends import Completion, Request, SamplingParams
from resources.cached_backend import CachedBackend
from resources.completion_codec import decode_completion, encode_completion
from resources.generation_cache import SCHEMA, GenerationCache
from resources.http_backend import JSON_CONTENT, HttpBackend, parse_answer
from resources.postgres_cache import PostgresGenerationCache

PROJECT_DIR = Path(__file__).resolve().parent.parent


def answer_body(tokens: int, k: int) -> bytes:
    """A chat completion of `tokens` tokens with the top-k log-probabilities of each, as vLLM serve writes it."""
    rng = random.Random(0)
    content = []
    for _ in range(tokens):
        alternatives = [{"token": f" w{rng.randrange(50_000)}", "logprob": -rng.random() * 8} for _ in range(k)]
        alternatives.sort(key=lambda alt: -alt["logprob"])
        content.append(
            {"token": alternatives[0]["token"], "logprob": alternatives[0]["logprob"], "top_logprobs": alternatives}
        )
    text = "".join(step["token"] for step in content)
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length",
              "logprobs": {"content": content}}  # fmt: skip
    usage = {"prompt_tokens": 12, "completion_tokens": tokens}
    return json.dumps(
        {"id": "chatcmpl-bench", "object": "chat.completion", "choices": [choice], "usage": usage}
    ).encode()


def serve(latency: float, tokens: int, k: int) -> None:
    """The loopback server: prints its base URL, then answers every POST with the same body after `latency`."""
    from aiohttp import web

    body = answer_body(tokens, k)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency)
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        await web.SockSite(runner, listener, backlog=1024).start()
        print(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class SynchronousCache:
    """The generation cache as it was before its writer thread: `put` encodes and commits one row, on the caller."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def get_many(self, keys) -> dict[str, Completion]:
        keys = list(keys)
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = f"SELECT key, completion FROM completions WHERE key IN ({','.join('?' * len(chunk))})"
            found.update((key, decode_completion(data)) for key, data in self._db.execute(query, chunk).fetchall())
        return found

    def put(self, key: str, teacher: str, completion: Completion) -> None:
        if completion.ok:
            self._db.execute(
                "INSERT OR IGNORE INTO completions (key, teacher, completion, created) VALUES (?, ?, ?, ?)",
                (key, teacher, encode_completion(completion), time.time()),
            )

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._db.close()


async def bare_client(url: str, requests: list[Request], args, parse: bool) -> None:
    """Only the requests: POST each body, read the answer's bytes (and decode them if `parse`); nothing kept."""
    semaphore = asyncio.Semaphore(args.concurrency)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def one(request: Request) -> None:
            body = {"model": "m", "messages": request.prompt, "max_tokens": args.tokens, "logprobs": True,
                    "top_logprobs": args.top_logprobs}  # fmt: skip
            post = client.post(f"{url}/chat/completions", data=msgspec.json.encode(body), headers=JSON_CONTENT)
            async with semaphore, post as response:
                data = await response.read()
                assert response.status == 200 and (
                    msgspec.json.decode(data)["choices"][0]["message"]["content"] if parse else data
                )

        await asyncio.gather(*(one(r) for r in requests))


def run_variant(variant: str, url: str, requests: list[Request], args, workdir: Path) -> tuple[float, float]:
    """(requests/s, client CPU ms per request) of one variant over `requests`."""
    params = SamplingParams(max_new_tokens=args.tokens, top_logprobs=args.top_logprobs)
    http = HttpBackend([url], model="m", concurrency=args.concurrency, timeout_s=60)
    cache = open_cache(variant, workdir, args)
    started, cpu = time.perf_counter(), time.process_time()
    if variant.startswith("bare"):
        asyncio.run(bare_client(url, requests, args, parse=variant == "bare_json"))
    else:
        client = CachedBackend(http, cache, "bench-teacher") if cache is not None else http
        completions = client.complete(requests, params)
        assert all(c.ok for c in completions), [c.error for c in completions if not c.ok][:3]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if cache is not None:
        cache.close()
    return len(requests) / seconds, cpu / len(requests) * 1e3


def open_cache(variant: str, workdir: Path, args):
    """A new, empty cache for a variant that has one."""
    if variant == "cached":
        return GenerationCache(Path(tempfile.mkdtemp(dir=workdir)) / "generations.sqlite")
    if variant == "before":
        return SynchronousCache(Path(tempfile.mkdtemp(dir=workdir)) / "generations.sqlite")
    if variant == "cached_pg":
        return PostgresGenerationCache(args.postgres, table=args.table)  # new prompts each run: nothing cached
    return None


VARIANTS = ("cached", "before", "no_cache", "bare", "bare_json")


def measure(url: str, args) -> dict[str, tuple[float, float]]:
    """Median requests/s and CPU ms per request of each variant over the rounds, the variants alternating."""
    variants = VARIANTS + (("cached_pg",) if args.postgres else ())
    runs: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="cache_throughput_") as workdir:
        for variant in variants:  # warm up: imports, connections, the server's first answers
            run_variant(variant, url, prompts(f"warm {variant}", args.concurrency * 2), args, Path(workdir))
        for round_ in range(args.rounds):
            shift = round_ % len(variants)  # each round starts with another variant: none always runs first
            for variant in variants[shift:] + variants[:shift]:
                rate = run_variant(variant, url, prompts(f"{round_} {variant}", args.requests), args, Path(workdir))
                runs[variant].append(rate)
                print(f"round {round_ + 1} {variant:>9}: {rate[0]:7.1f} requests/s, {rate[1]:.2f} ms CPU per request",
                      flush=True)  # fmt: skip
    return {v: (statistics.median(r for r, _ in runs[v]), statistics.median(c for _, c in runs[v])) for v in variants}


def prompts(tag: str, count: int) -> list[Request]:
    """Prompts no earlier run asked (each cached run starts from an empty cache anyway)."""
    return [Request([{"role": "user", "content": f"{tag} prompt {i}"}]) for i in range(count)]


def cpu_per_answer(body: bytes, repeats: int = 50) -> dict[str, float]:
    """CPU ms of one answer's steps, in this process: json.loads, msgspec's decoding to Python objects,
    HttpBackend's whole parse (msgspec's decoding to its structs and the TopK arrays), the cache's encoding."""
    parsed = parse_answer(body, chat=True, url="bench")
    steps = {
        "json.loads": lambda: json.loads(body),
        "msgspec.json.decode": lambda: msgspec.json.decode(body),
        "parse (decoding included)": lambda: parse_answer(body, chat=True, url="bench"),
        "encode for the cache": lambda: encode_completion(parsed),
    }
    out = {}
    for name, step in steps.items():
        started = time.process_time()
        for _ in range(repeats):
            step()
        out[name] = (time.process_time() - started) / repeats * 1e3
    return out


def insert_cpu(blob: bytes, page_size: int, rows: int = 4000) -> float:
    """CPU us per insert of `blob` into a new SQLite file in WAL mode, in batches of 250, as the cache's writer does."""
    with tempfile.TemporaryDirectory() as workdir:
        db = sqlite3.connect(Path(workdir) / "cache.sqlite", isolation_level=None)
        db.execute(f"PRAGMA page_size={page_size}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(SCHEMA)
        batches = [[(f"key {b} {i}", "teacher", blob, 0.0) for i in range(250)] for b in range(rows // 250)]
        started = time.process_time()
        for batch in batches:
            db.execute("BEGIN")
            db.executemany("INSERT INTO completions (key, teacher, completion, created) VALUES (?, ?, ?, ?)", batch)
            db.execute("COMMIT")
        seconds = time.process_time() - started
        db.close()
    return seconds / rows * 1e6


def report(results: dict[str, tuple[float, float]], args) -> None:
    rate = {v: r for v, (r, _) in results.items()}
    body = answer_body(args.tokens, args.top_logprobs)
    print(f"\nloopback server: {args.latency * 1e3:.0f} ms per request, {args.tokens} tokens x top-{args.top_logprobs}"
          f" log-probs per answer ({len(body):,} bytes), concurrency {args.concurrency}, {args.requests} requests"
          f" per run, median of {args.rounds} rounds")  # fmt: skip
    print(f"ideal: {args.concurrency / args.latency:.0f} requests/s")
    for variant, (r, cpu) in results.items():
        print(f"{variant:>9}: {r:7.1f} requests/s, client CPU {cpu:.2f} ms per request")
    steps = ", ".join(f"{name} {ms:.2f} ms" for name, ms in cpu_per_answer(body).items())
    print(f"one answer's CPU (all of it under one interpreter lock): {steps}")
    blob = encode_completion(parse_answer(body, chat=True, url="bench"))
    small, large = insert_cpu(blob, 4096), insert_cpu(blob, 65536)
    print(f"one answer ({len(blob):,} bytes) into the cache's SQLite file, CPU per insert: {small:.0f} us on its"
          f" 4 kB pages, {large:.0f} us on 64 kB pages")  # fmt: skip
    ratio = {f"{a}/{b}": rate[a] / rate[b] for a, b in
             (("cached", "no_cache"), ("cached", "bare_json"), ("cached", "bare"), ("before", "no_cache"),
              ("no_cache", "bare_json"), ("bare_json", "bare"))}  # fmt: skip
    if "cached_pg" in rate:
        ratio["cached_pg/no_cache"] = rate["cached_pg"] / rate["no_cache"]
    print("  ".join(f"{name}: {value:.2f}x" for name, value in ratio.items())
          + "  (goals: cached/no_cache and cached/bare_json >= 0.9x)")  # fmt: skip
    print(f"cache_throughput: cached={rate['cached']:.0f} before={rate['before']:.0f} no_cache={rate['no_cache']:.0f}"
          f" bare={rate['bare']:.0f} bare_json={rate['bare_json']:.0f} cached/no_cache={ratio['cached/no_cache']:.2f}"
          f" cached/bare_json={ratio['cached/bare_json']:.2f} cached/bare={ratio['cached/bare']:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2560, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05, help="the server's seconds per request")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default=None, help="also measure the Postgres cache (postgresql://...)")
    parser.add_argument("--serve", action="store_true", help="be the loopback server (the benchmark starts it)")
    args = parser.parse_args()
    args.table = f"bench_cache_{os.getpid()}"
    if args.serve:
        return serve(args.latency, args.tokens, args.top_logprobs)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.cache_throughput", "--serve", "--latency", str(args.latency),
         "--tokens", str(args.tokens), "--top-logprobs", str(args.top_logprobs)],
        cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        results = measure(url, args)
    finally:
        server.kill()
        server.wait()
        if args.postgres:
            drop_table(args.postgres, args.table)
    report(results, args)


def drop_table(url: str, table: str) -> None:
    import psycopg2

    db = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    db.autocommit = True
    with db.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
    db.close()


if __name__ == "__main__":
    main()
