"""What the benchmarks share: a demo-size teacher and demo prompts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from distill_assets.demo.make_data import DATA_DIR
from distill_assets.demo.tiny_models import build_tokenizer, llama_config

DEMO_TEACHER = Path(__file__).resolve().parent.parent / "distill_assets/demo/models/teacher_a"


def demo_teacher(path: str | None = None) -> str:
    """The given checkpoint, else the demo's teacher_a, else a random Llama of the demo's size (144 x 10 layers)."""
    if path:
        return path
    if DEMO_TEACHER.is_dir():
        return str(DEMO_TEACHER)
    out = Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config(tokenizer, hidden_size=144, num_hidden_layers=10)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"(demo teachers not trained yet: using a random Llama of their size in {out})")
    return str(out)


def demo_prompts(count: int) -> list[str]:
    prompts: list[str] = []
    for task in ("dates", "units", "reverse"):
        lines = (DATA_DIR / f"{task}_eval.jsonl").read_text().splitlines()
        prompts += [json.loads(line)["prompt"] for line in lines]
    return [prompts[(i * 7) % len(prompts)] for i in range(count)]  # the tasks interleaved
