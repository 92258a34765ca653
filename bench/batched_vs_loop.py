"""Batched transformers backend against a plain one-prompt-at-a-time `generate` loop (target >= 5x).

python -m bench.batched_vs_loop [--prompts 128] [--batch-size 64] [--model DIR]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import demo_prompts, demo_teacher
from distill_assets.generation import chat_prompt
from resources.backends import SamplingParams
from resources.transformers_backend import TransformersBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--model")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = TransformersBackend.load(demo_teacher(args.model), device, torch.float32, batch_size=args.batch_size)
    chats = [chat_prompt(p, None) for p in demo_prompts(args.prompts)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    backend.generate(chats[:4], params)  # warm up

    started = time.perf_counter()
    batched = backend.generate(chats, params)
    batched_s = time.perf_counter() - started

    # The baseline: what one writes without batching, one generate call per prompt.
    model, tokenizer, eos = backend.model, backend.tokenizer, backend.tokenizer.eos_token_id
    started = time.perf_counter()
    looped = []
    with torch.inference_mode():
        for chat in chats:
            ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            greedy = {"do_sample": False, "pad_token_id": eos, "eos_token_id": eos}
            out = model.generate(**ids.to(device), max_new_tokens=args.max_new_tokens, **greedy)
            looped.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    loop_s = time.perf_counter() - started

    same = sum(b.text == t for b, t in zip(batched, looped)) / len(chats)
    print(f"device: {device} ({torch.get_num_threads()} threads), {len(chats)} prompts x {args.max_new_tokens} tokens")
    print(f"batched (batch {args.batch_size}): {batched_s:6.2f}s  {len(chats) / batched_s:7.1f} prompts/s")
    print(f"one at a time loop:    {loop_s:6.2f}s  {len(chats) / loop_s:7.1f} prompts/s")
    print(f"speed-up: {loop_s / batched_s:.1f}x (target >= 5x); identical outputs: {same:.0%}")


if __name__ == "__main__":
    main()
