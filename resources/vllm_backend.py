"""vLLM's offline engine as a teacher backend (GPU machines; `pip install '.[vllm]'`).

vLLM is imported only when this backend is built, so the project installs and tests
without it. Prompts are tokenized here exactly as the transformers backend does (chats with the
model's own chat template, raw prompts as they are), and handed to `LLM.generate` as token ids: both backends
see the same input ids. Requests go to the engine in chunks, each chunk's answers are
reported as soon as it is done (the cache stores them), and within a chunk vLLM batches
continuously. A request the engine aborted (finish reason `abort`) is generated again, up to
`max_retries` times, then reported as a failed `Completion`: an aborted answer is never cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

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

INSTALL_HINT = "the vllm backend needs vLLM and a GPU: pip install 'distill[vllm]' (or `pip install -e '.[vllm]'`)"


def import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise RuntimeError(f"{INSTALL_HINT} ({err})") from None
    return vllm


class VLLMBackend(TeacherBackend):
    def __init__(self, llm: Any, name: str = "vllm", chunk_size: int = 2048, max_retries: int = 5):
        self.llm, self.name, self.chunk_size, self.max_retries = llm, name, chunk_size, max_retries
        self.tokenizer = llm.get_tokenizer()

    @classmethod
    def load(
        cls,
        path_or_id: str,
        dtype: str = "auto",
        revision: str | None = None,
        seed: int = 0,
        gpu_memory_utilization: float = 0.85,
        **engine_args: Any,
    ) -> VLLMBackend:
        vllm = import_vllm()
        llm = vllm.LLM(
            model=path_or_id,
            revision=revision,
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            **engine_args,
        )
        return cls(llm, name=path_or_id)

    def encode(self, prompt: Prompt) -> list[int]:
        return list(encode_prompt(self.tokenizer, prompt))

    def sampling_params(self, params: SamplingParams, request: Request) -> Any:
        vllm = import_vllm()
        return vllm.SamplingParams(
            n=1,  # each sample is its own request, cached and seeded alone
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=None if params.greedy else params.seed_for(request.sample_index, request.prompt),
            logprobs=params.top_logprobs or None,
            stop=list(params.stop) or None,
        )

    def complete(
        self,
        requests: Sequence[Request],
        params: SamplingParams,
        progress: Progress | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        for start in range(0, len(requests), self.chunk_size):
            chunk = range(start, min(start + self.chunk_size, len(requests)))
            for i, completion in self._generate(requests, list(chunk), params):
                results[i] = completion
                if on_completion:
                    on_completion(i, completion)
            if progress:
                progress(chunk.stop, len(requests))
        return results  # type: ignore[return-value]

    def _generate(
        self, requests: Sequence[Request], indices: list[int], params: SamplingParams
    ) -> Iterator[tuple[int, Completion]]:
        """(index, completion) for the requests at `indices`; the aborted ones generated again, then failed."""
        for _ in range(self.max_retries + 1):
            prompts = [{"prompt_token_ids": self.encode(requests[i].prompt)} for i in indices]
            sampling = [self.sampling_params(params, requests[i]) for i in indices]
            outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
            aborted = []
            for i, output in zip(indices, outputs):
                if output.outputs[0].finish_reason == "abort":
                    aborted.append(i)
                else:
                    yield i, self.to_completion(output.outputs[0], params.top_logprobs)
            if not aborted:
                return
            indices = aborted
        reason = f"vLLM aborted the request {self.max_retries + 1} times (finish_reason 'abort')"
        for i in indices:
            yield i, Completion.failed(reason)

    def to_completion(self, output: Any, k: int) -> Completion:
        top = None
        if k and output.logprobs is not None:
            # vLLM returns the top-k and, when it is not among them, the sampled token: keep the k best.
            steps = [sorted(step.items(), key=lambda item: -item[1].logprob)[:k] for step in output.logprobs]
            top = TopK.from_steps(
                [[lp.logprob for _, lp in step] for step in steps], ids=[[tid for tid, _ in step] for step in steps]
            )
        return Completion(
            text=output.text,
            num_tokens=len(output.token_ids),
            finish_reason=output.finish_reason or "stop",
            top_logprobs=top,
        )

    def close(self) -> None:
        import torch

        del self.llm
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
