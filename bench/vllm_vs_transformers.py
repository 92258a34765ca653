"""vLLM's offline engine against the transformers backend on the same teacher and prompts (GPU machine).

    pip install -e '.[vllm]'
    python -m bench.vllm_vs_transformers [--prompts 2048] [--model DIR] [--dtype bfloat16]

Prints both throughputs and the outputs' agreement: the fraction of prompts whose greedy
completions are identical (both backends see the same chat-templated token ids). Where there
is no GPU or no vLLM, it says so and exits 0: `make bench` runs it everywhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from bench.common import demo_prompts, demo_teacher
from distill_assets.generation import chat_prompt
from resources.backends import Request, SamplingParams


def missing() -> list[str]:
    """What this machine lacks to run the comparison; empty when it can."""
    problems = []
    if importlib.util.find_spec("vllm") is None:
        problems.append("no vLLM (pip install -e '.[vllm]')")
    if not torch.cuda.is_available():
        problems.append("no GPU (vLLM's offline engine needs a CUDA device)")
    return problems


def timed(backend, requests: list[Request], params: SamplingParams) -> tuple[float, list]:
    backend.complete(requests[:8], params)  # warm up (CUDA graphs, kernels)
    torch.cuda.synchronize()
    started = time.perf_counter()
    completions = backend.complete(requests, params)
    torch.cuda.synchronize()
    return time.perf_counter() - started, completions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=256, help="the transformers backend's batch size")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--model")
    args = parser.parse_args()
    if problems := missing():
        print("bench/vllm_vs_transformers.py skipped: " + "; ".join(problems))
        return

    from resources.transformers_backend import TransformersBackend
    from resources.vllm_backend import VLLMBackend

    model = demo_teacher(args.model)
    requests = [Request(chat_prompt(p, None)) for p in demo_prompts(args.prompts)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)

    local = TransformersBackend.load(model, torch.device("cuda"), getattr(torch, args.dtype), args.batch_size)
    local_s, local_out = timed(local, requests, params)
    local.close()

    engine = VLLMBackend.load(model, dtype=args.dtype, gpu_memory_utilization=0.5)
    vllm_s, vllm_out = timed(engine, requests, params)

    def tokens(out: list) -> int:
        return sum(c.num_tokens for c in out)

    same = sum(a.text == b.text for a, b in zip(local_out, vllm_out)) / len(requests)
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}, {model}, {len(requests)} prompts x {args.max_new_tokens} tokens, {args.dtype}")
    for name, seconds, out in (("transformers", local_s, local_out), ("vllm", vllm_s, vllm_out)):
        print(f"{name:12s} {seconds:7.2f}s {len(out) / seconds:9.1f} prompts/s {tokens(out) / seconds:10.1f} tokens/s")
    print(f"vLLM / transformers throughput: {local_s / vllm_s:.1f}x; identical greedy outputs: {same:.1%}")
    for a, b in [(a, b) for a, b in zip(local_out, vllm_out) if a.text != b.text][:3]:
        print(f"  differs: transformers {a.text!r} vs vllm {b.text!r}")


if __name__ == "__main__":
    main()
