"""Train the demo's tiny specialist teachers from scratch and save them as checkpoints.

    python -m distill_assets.demo.train_teachers            # both teachers, ~N minutes on 2 cores
    python -m distill_assets.demo.train_teachers --only teacher_a

A teacher sees an endless stream of fresh examples of its own tasks (never an eval
prompt) and only a small fixed pool of the others', so it is a specialist: strong on
its tasks, clearly weaker on the rest. Checkpoints are written in bfloat16 to keep
them a few MB; `transformers` loads them as they are.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from distill_assets.demo.make_data import DATA_DIR
from distill_assets.demo.tasks import TASKS
from distill_assets.demo.tiny_models import build_tokenizer, llama_config

MODELS_DIR = Path(__file__).parent / "models"


@dataclass
class TeacherRecipe:
    name: str
    tasks: list[str]  # the tasks it is a specialist in
    hidden_size: int = 144
    num_hidden_layers: int = 10
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    off_task_pool: int = 150  # distinct examples it ever sees of each other task
    off_task_share: float = 0.05
    seed: int = 0
    extra: dict = field(default_factory=dict)


RECIPES = {
    "teacher_a": TeacherRecipe("teacher_a", tasks=["dates", "units"]),
    "teacher_b": TeacherRecipe("teacher_b", tasks=["reverse"], seed=1),
}


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def encode(tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[str, str]]) -> dict:
    """Right-padded chat-formatted batch; loss only on the answer and its end token."""
    rows = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        for p, a in pairs
    ]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        answer = torch.tensor(r["assistant_masks"], dtype=torch.bool)
        labels[i, :n] = torch.where(answer, ids[i, :n], -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.inference_mode()
def exact_match(model, tokenizer, rows: list[dict], batch_size: int = 200) -> float:
    model.eval()
    hits = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = tokenizer.apply_chat_template(
            [[{"role": "user", "content": r["prompt"]}] for r in chunk],
            add_generation_prompt=True,
            padding=True,
            return_dict=True,
            return_tensors="pt",
        )
        out = model.generate(**batch, max_new_tokens=16, do_sample=False)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        hits += sum(t.strip() == r["answer"] for t, r in zip(texts, chunk))
    model.train()
    return hits / len(rows)


def train(recipe: TeacherRecipe, out_dir: Path, log_every: int = 100, resume: bool = False) -> dict[str, float]:
    """Train (or, with resume, keep training the checkpoint in out_dir) and save to out_dir."""
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed + (1000 if resume else 0))  # fresh examples when resuming
    tokenizer = build_tokenizer()
    if resume:
        model = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    else:
        model = LlamaForCausalLM(llama_config(tokenizer, recipe.hidden_size, recipe.num_hidden_layers))
    evals = {t: load_jsonl(DATA_DIR / f"{t}_eval.jsonl") for t in TASKS}
    held_out = {r["prompt"] for rows in evals.values() for r in rows}

    def fresh(task: str) -> tuple[str, str]:
        while True:
            prompt, answer = TASKS[task](rng)
            if prompt not in held_out:
                return prompt, answer

    others = [t for t in TASKS if t not in recipe.tasks]
    pools = {t: [fresh(t) for _ in range(recipe.off_task_pool)] for t in others}

    def example() -> tuple[str, str]:
        if others and rng.random() < recipe.off_task_share:
            return rng.choice(pools[rng.choice(others)])
        return fresh(rng.choice(recipe.tasks))

    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, recipe.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return recipe.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, recipe.steps - warmup)
        return recipe.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    started = time.time()
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = encode(tokenizer, [example() for _ in range(recipe.batch_size)])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == recipe.steps - 1:
            print(f"{recipe.name} step {step:5d} loss {loss.item():.4f} ({time.time() - started:.0f}s)", flush=True)

    model = model.to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    reloaded = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    scores = {t: exact_match(reloaded, tokenizer, rows[:200]) for t, rows in evals.items()}
    (out_dir / "demo_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(f"{recipe.name} exact match on eval prompts: {scores}", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="train just this teacher")
    parser.add_argument("--steps", type=int, help="override the recipe's step count")
    parser.add_argument("--lr", type=float, help="override the recipe's peak learning rate")
    parser.add_argument("--resume", action="store_true", help="keep training the saved checkpoint")
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    args = parser.parse_args()
    for name in args.only or sorted(RECIPES):
        recipe = RECIPES[name]
        if args.steps:
            recipe.steps = args.steps
        if args.lr:
            recipe.lr = args.lr
        train(recipe, args.out / name, resume=args.resume)


if __name__ == "__main__":
    main()
