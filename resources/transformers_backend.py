"""Local `transformers` backend: batched generation with left padding and a KV cache."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from distill_assets.padding import ensure_pad_token
from resources.backends import (
    Completion,
    OnCompletion,
    Progress,
    Prompt,
    Request,
    SamplingParams,
    TeacherBackend,
    TokenLogprob,
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
        """Generate for already tokenized prompts; returns the new token ids of each."""
        return self._generate(batch, params)[0]

    def _generate(
        self, batch: list[list[int]], params: SamplingParams
    ) -> tuple[list[list[int]], list[list[list[tuple[int, float]]]] | None]:
        """New token ids per prompt and, when params.top_logprobs > 0, each new token's top-k (id, logprob)."""
        padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
        sampling = (
            {"do_sample": False}
            if params.greedy
            else {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        )
        if params.stop:  # a row stops once its text holds a stop string; complete() cuts the string off
            sampling |= {"stop_strings": list(params.stop), "tokenizer": self.tokenizer}
        k = params.top_logprobs
        with torch.inference_mode():
            out = self.model.generate(
                **padded,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                return_dict_in_generate=True,
                output_logits=k > 0,
                **sampling,
            )
        new = out.sequences[:, padded["input_ids"].shape[1] :].tolist()
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        # A row ends at its end token; a row stopped by a stop string is padded after it.
        ids = [row[: row.index(eos) + 1] if eos in row else _strip_right(row, pad) for row in new]
        if not k:
            return ids, None
        # Raw logits, before temperature/top-p: the teacher's own distribution, which logit
        # distillation matches. Shape (steps, batch, k) -> per prompt, per step.
        logprobs = torch.stack(out.logits).float().log_softmax(-1)
        values, indices = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
        values, indices = values.transpose(0, 1).tolist(), indices.transpose(0, 1).tolist()
        top = [[list(zip(indices[b][t], values[b][t])) for t in range(len(ids[b]))] for b in range(len(ids))]
        return ids, top

    def _token_logprobs(self, steps: list[list[tuple[int, float]]]) -> tuple[tuple[TokenLogprob, ...], ...]:
        return tuple(
            tuple(TokenLogprob(self.tokenizer.convert_ids_to_tokens(i), lp, i) for i, lp in step) for step in steps
        )

    def _completion(self, ids: list[int], top, stop: tuple[str, ...]) -> Completion:
        """The completion of one row: its text cut before the first stop string, with the tokens before it."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        stopped = bool(ids) and ids[-1] == self.tokenizer.eos_token_id
        if cut >= 0:
            text, stopped = text[:cut], True
            kept = 0  # the tokens whose text lies wholly before the stop string
            while kept < len(ids) and len(self.tokenizer.decode(ids[: kept + 1], skip_special_tokens=True)) <= cut:
                kept += 1
            ids, top = ids[:kept], top[:kept] if top is not None else None
        return Completion(
            text=text,
            num_tokens=len(ids),
            finish_reason="stop" if stopped else "length",
            top_logprobs=self._token_logprobs(top) if top is not None else None,
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
            if not params.greedy:
                torch.manual_seed(params.seed + start)
            ids_per_prompt, top = self._generate([encoded[i] for i in chunk], params)
            for j, (i, ids) in enumerate(zip(chunk, ids_per_prompt)):
                results[i] = self._completion(ids, top[j] if top is not None else None, params.stop)
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
