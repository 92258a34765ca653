"""Scale: the data path at 10k and 100k prompts with top-20 log-probabilities, peak memory and time per stage.

python -m bench.scale --prompts 10000 100000 --top-logprobs 20 [--tokens 64] [--generation http|direct]

Each size runs in a fresh process through the pipeline's own functions, stage by stage:
generation (the HTTP backend and its generation cache, against a loopback OpenAI-compatible
teacher in a process of its own that answers at once with `--tokens`-token completions and
their top-k log-probabilities) -> curation -> training set (merge, dedup, text exports, its
data version) -> the offline-logits dataset (memory-mapped top-k store, vocabulary check,
alignment) and one training step's batch from its collator. It prints, per size, the
process's peak RSS, the wall time of each stage and the bytes per generated token on disk
(generation cache, synthetic completions, training set); then the ratio of the largest size's
time to the smallest's, and last:
`scale: prompts=<largest> peak_rss_mb=<n> bytes_per_token=<n> time_ratio_100k_10k=<n>`
(bytes_per_token: the synthetic completions' Parquet file; the ratio: largest over smallest
size, whatever the sizes are).

The loopback teacher speaks like vLLM serve with `return_tokens_as_token_ids`: its tokens are
"token_id:<id>" strings of the demo's character tokenizer, which the HTTP backend stores as
`topk_ids`, so the offline-logits stage has ids to learn from. `--generation direct` writes the
same completions without HTTP or cache, to measure the stages after generation alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl

from distill_assets import frames
from distill_assets.demo.tiny_models import CHARACTERS, build_tokenizer

PROJECT_DIR = Path(__file__).resolve().parent.parent
ALPHABET = [c for c in CHARACTERS if c.isalnum() or c == " "]  # nothing a curation rule reads as a leak
TEACHER, TASK = "loopback", "scale"


class LoopbackTeacher:
    """What the loopback teacher answers: per prompt, `tokens` characters, each the top-1 of its step's k entries.

    A step's other k - 1 ids and all k log-probabilities are one of VARIANTS drawn at random for
    its character, so the stored columns vary from step to step as a real teacher's do (ids come
    from the demo tokenizer's 102 tokens, though: they compress better than a 50k vocabulary's).
    """

    VARIANTS = 512

    def __init__(self, tokens: int, k: int):
        self.tokens, self.k = tokens, k
        vocab = build_tokenizer().get_vocab()
        rng = np.random.default_rng(0)
        chosen = np.array([vocab[c] for c in ALPHABET], dtype=np.int32)
        others = rng.choice(np.array(sorted(vocab.values()), dtype=np.int32), (len(ALPHABET), self.VARIANTS, k - 1))
        self.top_ids = np.concatenate([np.broadcast_to(chosen[:, None, None], (*others.shape[:2], 1)), others], -1)
        logprobs = -np.sort(rng.uniform(0.01, 8.0, self.top_ids.shape), axis=-1)  # most likely first
        self.top_logprobs = logprobs.astype(np.float16)

    def choices(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """(character index, variant index) of each generated token, drawn from the prompt."""
        rng = np.random.default_rng(zlib.crc32(prompt.encode()))
        return rng.integers(0, len(ALPHABET), self.tokens), rng.integers(0, self.VARIANTS, self.tokens)

    def completion(self, prompt: str) -> str:
        return "".join(ALPHABET[c] for c in self.choices(prompt)[0])

    def step_json(self, c: int, v: int) -> str:
        ids, logprobs = self.top_ids[c, v].tolist(), self.top_logprobs[c, v].tolist()
        top = [{"token": f"token_id:{i}", "logprob": lp} for i, lp in zip(ids, logprobs)]
        return json.dumps({**top[0], "bytes": None, "top_logprobs": top})


def serve(tokens: int, k: int) -> None:
    """The loopback teacher's HTTP server (aiohttp): prints its URL, then answers until killed."""
    import asyncio
    import socket

    from aiohttp import web

    teacher = LoopbackTeacher(tokens, k)
    fragments = [[teacher.step_json(c, v) for v in range(teacher.VARIANTS)] for c in range(len(ALPHABET))]
    usage = json.dumps({"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1})

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        if int(body.get("top_logprobs") or 0) != k:
            return web.Response(status=400, text=f"this teacher serves top_logprobs={k}")
        chars, variants = teacher.choices(body["messages"][-1]["content"])
        steps = ",".join(fragments[c][v] for c, v in zip(chars.tolist(), variants.tolist()))
        message = json.dumps({"role": "assistant", "content": "".join(ALPHABET[c] for c in chars)})
        choice = f'{{"index":0,"message":{message},"finish_reason":"stop","logprobs":{{"content":[{steps}]}}}}'
        payload = f'{{"id":"x","object":"chat.completion","model":"bench","choices":[{choice}],"usage":{usage}}}'
        return web.Response(text=payload, content_type="application/json")

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    async def run() -> None:
        app = web.Application(client_max_size=1 << 24)
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, backlog=1024).start()
        print(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


def bench_spec(work: Path, url: str, args):
    """One task and the loopback teacher (openai backend, greedy, top-k log-probabilities)."""
    from distill_assets.spec import Spec

    build_tokenizer().save_pretrained(work / "tokenizer")
    generation = {"max_new_tokens": args.tokens * 2, "temperature": 0.0, "top_logprobs": args.top_logprobs}
    architecture = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    teacher = {"name": TEACHER, "backend": "openai", "model": "bench", "base_urls": [url], "concurrency": 64,
               "tasks": [TASK]}  # fmt: skip
    return Spec.model_validate(
        {
            "tasks": [{"name": TASK, "source": "prompts.jsonl"}],
            "teachers": [{**teacher, "generation": generation}],
            "students": [{"name": "student", "base": {"architecture": architecture, "tokenizer": "tokenizer"}}],
            "base_dir": work,
        }
    )


def prompts_frame(count: int) -> pl.DataFrame:
    ids = [f"p{i}" for i in range(count)]
    prompts = [f"Question {i}: what follows {i * 7919 % 1_000_003}?" for i in range(count)]
    return pl.DataFrame({"prompt_id": ids, "task": TASK, "prompt": prompts, "reference": None})


def generate_http(spec, prompts: pl.DataFrame, path: Path) -> None:
    """The synthetic_completions asset's path: the cached HTTP backend, completions streamed to `path` in chunks."""
    from distill_assets.generation import write_completions
    from resources.teachers import cached_teacher

    teacher, task = spec.teacher(TEACHER), spec.task(TASK)
    with cached_teacher(teacher, spec, None, path.parent / "cache.sqlite") as backend:
        write_completions(backend, prompts, teacher, task, path)


def generate_direct(spec, prompts: pl.DataFrame, args) -> pl.LazyFrame:
    """The loopback teacher's completions for `prompts`, written without HTTP or cache, a chunk at a time."""
    teacher = LoopbackTeacher(args.tokens, args.top_logprobs)
    version = spec.teacher(TEACHER).version()

    def chunk(rows: pl.DataFrame, _first: int) -> pl.DataFrame:
        drawn = [teacher.choices(p) for p in rows["prompt"]]
        texts = ["".join(ALPHABET[c] for c in chars) for chars, _ in drawn]
        chosen = tuple(np.concatenate(parts) for parts in zip(*drawn)) if drawn else ([], [])
        shape = (rows.height, args.tokens, args.top_logprobs)
        return rows.select(
            "task", "prompt_id", "prompt", sample_index=pl.lit(0, pl.Int64), completion=pl.Series(texts),
            num_tokens=pl.lit(args.tokens, pl.Int64), finish_reason=pl.lit("stop"), error=pl.lit(None, pl.String),
            topk_ids=pl.Series(teacher.top_ids[chosen].reshape(-1)).reshape(shape).cast(pl.List(pl.List(pl.Int32))),
            topk_logprobs=pl.Series(teacher.top_logprobs[chosen].reshape(-1)).reshape(shape)
            .cast(pl.List(pl.List(pl.Float16))),
            topk_tokens=pl.lit(None, pl.List(pl.List(pl.String))), teacher=pl.lit(TEACHER),
            teacher_version=pl.lit(version),
        )  # fmt: skip

    schema = chunk(prompts.head(1), 0).schema
    return frames.chunked(prompts.lazy(), chunk, schema)


def stage_curate(spec, prompts: pl.DataFrame, work: Path) -> Path:
    from distill_assets.curation import curate_partition

    curated, _ = curate_partition(frames.scan_parquet(work / "synthetic_completions.parquet"), prompts, spec.quality)
    frames.write_parquet(curated, str(work / "curated_completions.parquet"))
    return work / "curated_completions.parquet"


def stage_training_set(spec, work: Path) -> dict:
    from distill_assets.curation import dedup_across, kept
    from distill_assets.keys import teacher_task_key
    from distill_assets.routing import Routing
    from distill_assets.training_set import export, merge_routed
    from distill_assets.versions import frame_version

    curated = frames.scan_parquet(work / "curated_completions.parquet")
    merged = merge_routed({teacher_task_key(TEACHER, TASK): kept(curated)}, spec, Routing.from_spec(spec))
    training, _ = dedup_across(merged, spec.quality)
    export(training, work / "exports")
    path = work / "training_set.parquet"
    frames.write_parquet(training, str(path))
    return {"rows": frames.parquet_rows(str(path)), "version": frame_version(frames.scan_parquet(path))}


def stage_offline_logits(work: Path, batch_rows: int = 8) -> dict:
    """The offline-logits dataset from the training set's file, and the collator's batch for its first rows."""
    from distill_assets.methods.offline_logits import align, check_vocabulary, to_dataset
    from distill_assets.methods.offline_logits_trainer import TopKCollator

    tokenizer = build_tokenizer()
    training = frames.scan_parquet(work / "training_set.parquet")
    check_vocabulary(training, tokenizer, lambda _teacher: tokenizer)  # the loopback teacher's tokenizer
    dataset, store = to_dataset(training, work)
    dataset = align(dataset, tokenizer, store, log=lambda line: print(line, file=sys.stderr))
    examples = []
    for row in dataset.select(range(batch_rows)):
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)
        full = list(tokenizer.apply_chat_template(row["prompt"] + row["completion"], return_dict=True)["input_ids"])
        start = len(prompt["input_ids"])
        examples.append({**row, "input_ids": full, "labels": [-100] * start + full[start:]})
    collator = TopKCollator(pad_token_id=tokenizer.pad_token_id, store=store, vocab_size=len(tokenizer))
    batch = collator(examples)
    placed = int((batch["teacher_token_ids"][..., 0] >= 0).sum())
    expected = sum(len(store.steps(e["teacher_row"])[0]) for e in examples if e["teacher_row"] >= 0)
    assert placed == expected, f"the collator placed {placed} teacher steps of {expected}"
    return {"dataset_rows": len(dataset), "batch": list(batch["teacher_token_ids"].shape), "steps_placed": placed}


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def file_bytes(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def run_size(count: int, args, url: str | None, work: Path) -> dict:
    """Every stage for `count` prompts, in this process: wall seconds per stage, sizes, peak RSS."""
    spec = bench_spec(work, url or "http://127.0.0.1:9/v1", args)
    prompts = prompts_frame(count)
    seconds: dict[str, float] = {}
    rss: dict[str, int] = {}  # the process's peak RSS once each stage is done, MB
    started = time.perf_counter()
    synthetic = work / "synthetic_completions.parquet"
    if url:
        generate_http(spec, prompts, synthetic)
    else:
        frames.write_parquet(generate_direct(spec, prompts, args), str(synthetic))
    seconds["generation"], rss["generation"] = time.perf_counter() - started, peak_rss_mb()
    for stage, run in (
        ("curation", lambda: stage_curate(spec, prompts, work)),
        ("training_set", lambda: stage_training_set(spec, work)),
        ("offline_logits", lambda: stage_offline_logits(work)),
    ):
        started = time.perf_counter()
        result = run()
        seconds[stage], rss[stage] = time.perf_counter() - started, peak_rss_mb()
    tokens = pl.scan_parquet(synthetic).select(pl.col("num_tokens").sum()).collect().item()
    cache = work / "cache.sqlite"
    return {
        "prompts": count,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "total_s": round(sum(seconds.values()), 2),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_mb_after": rss,
        "tokens": tokens,
        "bytes_per_token": {
            "cache": round(file_bytes(cache, cache.with_name("cache.sqlite-wal")) / tokens, 1) if url else None,
            "synthetic_completions": round(file_bytes(synthetic) / tokens, 1),
            "training_set": round(file_bytes(work / "training_set.parquet") / tokens, 1),
        },
        "offline_logits": result,
    }


def one_size(count: int, args) -> None:
    """A size in a fresh process (its own peak RSS), with its own loopback teacher; prints one JSON line."""
    with tempfile.TemporaryDirectory(prefix=f"scale-{count}-") as scratch:
        server = None
        if args.generation == "http":
            command = [sys.executable, "-m", "bench.scale", "--serve", "--tokens", str(args.tokens),
                       "--top-logprobs", str(args.top_logprobs)]  # fmt: skip
            server = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().strip() if server else None  # type: ignore[union-attr]
            print(json.dumps(run_size(count, args, url, Path(scratch))))
        finally:
            if server:
                server.kill()
                server.wait()


def report(results: list[dict]) -> None:
    for r in results:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds"].items())
        sizes = ", ".join(f"{k} {v}" for k, v in r["bytes_per_token"].items() if v is not None)
        print(f"{r['prompts']:>7} prompts: peak RSS {r['peak_rss_mb']} MB; {stages}; total {r['total_s']:.1f} s")
        print(f"{'':>16}peak RSS once each stage is done (MB): {r['peak_rss_mb_after']}")
        print(f"{'':>16}bytes per generated token ({r['tokens']} tokens): {sizes}")
        print(f"{'':>16}offline-logits dataset and batch: {r['offline_logits']}")
    small, large = results[0], results[-1]
    ratio, times = large["total_s"] / small["total_s"], large["prompts"] / small["prompts"]
    print(f"time ratio {large['prompts']} / {small['prompts']} prompts: {ratio:.2f} ({times:g}x the prompts)")
    print(
        f"scale: prompts={large['prompts']} peak_rss_mb={large['peak_rss_mb']} "
        f"bytes_per_token={large['bytes_per_token']['synthetic_completions']} time_ratio_100k_10k={ratio:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[10_000, 100_000], help="sizes, smallest first")
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per completion")
    parser.add_argument("--generation", choices=("http", "direct"), default="http")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the loopback teacher itself
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one size, in this process
    args = parser.parse_args()
    if args.serve:
        return serve(args.tokens, args.top_logprobs)
    if args.one:
        return one_size(args.one, args)
    results = []
    for count in sorted(args.prompts):
        command = [sys.executable, "-m", "bench.scale", "--one", str(count), "--tokens", str(args.tokens),
                   "--top-logprobs", str(args.top_logprobs), "--generation", args.generation]  # fmt: skip
        out = subprocess.run(command, cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"({count} prompts done in {results[-1]['total_s']:.1f} s)", file=sys.stderr)
    report(results)


if __name__ == "__main__":
    main()
