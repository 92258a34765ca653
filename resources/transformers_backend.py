"""Local `transformers` backend: batched generation with left padding and a KV cache.

Two logits processors do the per-step work: one keeps each step's top-k log-probabilities
(never a step's full-vocabulary tensor), and, when sampling, one draws each row's token with a
generator seeded from that request's sample index, so sample i of a prompt is the same whether
it is generated alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from distill_assets.padding import ensure_pad_token
from resources.backends import (
    Completion,
    OnCompletion,
    Progress,
    Prompt,
    Request,
    SamplingParams,
    TeacherBackend,
    TopK,
    encode_prompt,
)


def load_model(
    path_or_id: str, device: torch.device, dtype: torch.dtype, revision: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, ready for batched left-padded generation."""
    tokenizer = AutoTokenizer.from_pretrained(path_or_id, revision=revision)
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    ensure_pad_token(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path_or_id, revision=revision, dtype=dtype)
    return model.to(device).eval(), tokenizer


def _strip_right(row: list[int], pad: int | None) -> list[int]:
    end = len(row)
    while end and row[end - 1] == pad:
        end -= 1
    return row[:end]


class TopKRecorder(LogitsProcessor):
    """Keeps each step's top-k log-probabilities of the scores it sees, and leaves the scores as they are.

    Placed before any sampling, it sees the model's own distribution (before temperature and
    top-p), which logit distillation matches.
    """

    def __init__(self, k: int):
        self.k = k
        self.ids: list[torch.Tensor] = []
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = scores.float().log_softmax(-1).topk(min(self.k, scores.shape[-1]), dim=-1)
        self.ids.append(top.indices.to(torch.int32))
        self.logprobs.append(top.values.to(torch.float16))
        return scores

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """ids and log-probabilities, [batch, steps, k]."""
        return torch.stack(self.ids, 1).cpu().numpy(), torch.stack(self.logprobs, 1).cpu().numpy()


class SeededSampler(LogitsProcessor):
    """Samples each row's next token (temperature, then top-p) with that row's own generator, and
    leaves it the only choice, so greedy decoding takes it: a row's tokens depend on its seed and
    its prompt, not on the batch it is in (generate's own sampling draws for the batch at once)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        warpers = [TemperatureLogitsWarper(temperature)]
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warpers = LogitsProcessorList(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = self.warpers(input_ids, scores.float()).softmax(-1)
        chosen = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        only = torch.full_like(scores, -float("inf"))
        return only.scatter_(1, chosen[:, None], 0.0)


class TransformersBackend(TeacherBackend):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 64,
        name: str = "model",
    ):
        self.name = name
        self.batch_size = batch_size
        self.model, self.tokenizer = model.eval(), tokenizer
        self.tokenizer.padding_side = "left"
        ensure_pad_token(self.tokenizer)
        self.device = model.device

    @classmethod
    def load(
        cls,
        path_or_id: str,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int = 64,
        revision: str | None = None,
    ) -> TransformersBackend:
        model, tokenizer = load_model(path_or_id, device, dtype, revision)
        return cls(model, tokenizer, batch_size=batch_size, name=path_or_id)

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        return [encode_prompt(self.tokenizer, p) for p in prompts]

    def generate_ids(self, batch: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Generate for already tokenized prompts (their sample 0); returns the new token ids of each."""
        return self._generate(batch, params, [params.seed_for(0, ids) for ids in batch])[0]

    def _generate(
        self, batch: list[list[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> tuple[list[list[int]], TopKRecorder | None]:
        """New token ids per prompt and, when params.top_logprobs > 0, the recorder holding their top-k."""
        padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        recorder = TopKRecorder(params.top_logprobs) if params.top_logprobs else None
        processors = [recorder] if recorder else []
        if not params.greedy:
            processors.append(SeededSampler(seeds, params.temperature, params.top_p, self.device))
        stop = {"stop_strings": list(params.stop), "tokenizer": self.tokenizer} if params.stop else {}
        with torch.inference_mode():
            sequences = self.model.generate(
                **padded,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                do_sample=False,  # SeededSampler has drawn the token when sampling
                logits_processor=LogitsProcessorList(processors),
                **stop,  # a row stops once its text holds a stop string; complete() cuts the string off
            )
        new = sequences[:, padded["input_ids"].shape[1] :].tolist()
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        # A row ends at its end token; a row stopped by a stop string is padded after it.
        ids = [row[: row.index(eos) + 1] if eos in row else _strip_right(row, pad) for row in new]
        return ids, recorder

    def _completion(self, ids: list[int], top: TopK | None, stop: tuple[str, ...]) -> Completion:
        """The completion of one row: its text cut before the first stop string, with the tokens before it."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        stopped = bool(ids) and ids[-1] == self.tokenizer.eos_token_id
        if cut >= 0:
            text, stopped = text[:cut], True
            kept = 0  # the tokens whose text lies wholly before the stop string
            while kept < len(ids) and len(self.tokenizer.decode(ids[: kept + 1], skip_special_tokens=True)) <= cut:
                kept += 1
            ids, top = ids[:kept], top.head(kept) if top is not None else None
        return Completion(
            text=text, num_tokens=len(ids), finish_reason="stop" if stopped else "length", top_logprobs=top
        )

    def complete(
        self,
        requests: Sequence[Request],
        params: SamplingParams,
        progress: Progress | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[Completion]:
        encoded = self.encode([r.prompt for r in requests])
        # Batch prompts of similar length together so little compute goes to padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            seeds = [params.seed_for(requests[i].sample_index, encoded[i]) for i in chunk]  # as generate_ids seeds
            ids_per_prompt, recorder = self._generate([encoded[i] for i in chunk], params, seeds)
            top_ids, top_logprobs = recorder.arrays() if recorder else (None, None)
            for j, (i, ids) in enumerate(zip(chunk, ids_per_prompt)):
                top = TopK(top_ids[j, : len(ids)], top_logprobs[j, : len(ids)]) if recorder else None
                results[i] = self._completion(ids, top, params.stop)
                if on_completion:
                    on_completion(i, results[i])
            if progress:
                progress(min(start + self.batch_size, len(order)), len(order))
        return results  # type: ignore[return-value]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
