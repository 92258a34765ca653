"""OpenAI-compatible client (vLLM serve, SGLang, TGI, Ollama, llama.cpp's server, Llama API).

Chat prompts go to `/chat/completions`; raw prompts (a teacher in `mode: completion`, a base
model) to `/completions`, whose log-probabilities come in the older per-token form.

Requests run concurrently on one asyncio loop (aiohttp; `bench.http_concurrency` prints the
client's CPU per request), at most `concurrency` at a time, spread round-robin over the replicas
in `base_urls` (a retry goes to the next replica). Answers are decoded on the loop by msgspec into
structs of the fields read (`ChatAnswer`), the top-k into TopK's arrays. The retry policy is
in resources/retry.py; an HTTP 200 without content and vLLM's `abort` finish reason count as
failures too (`parse_answer`). A request that still fails after its retries comes back as a
failed `Completion` naming the reason, never dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import threading
from collections.abc import Sequence

import aiohttp
import msgspec

from resources.backends import (
    Completion,
    OnCompletion,
    Progress,
    Request,
    SamplingParams,
    TeacherBackend,
    TopK,
)
from resources.retry import PermanentError, RetryableError, RetryPolicy, is_retryable_status, parse_retry_after

JSON_CONTENT = {"Content-Type": "application/json"}  # bodies are encoded by msgspec, not aiohttp's json.dumps
_encode = msgspec.json.Encoder().encode


class HttpBackend(TeacherBackend):
    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        name: str = "openai",
        seed: int | None = None,
        extra_body: dict | None = None,
    ):
        if not base_urls:
            raise ValueError("HttpBackend needs at least one base URL")
        self.name = name
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.model = model
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.rng = random.Random(seed)
        self.extra_body = dict(extra_body or {})  # server-specific fields sent with every request
        self.attempts = 0  # HTTP requests sent, retries included

    @staticmethod
    def api_key_from_env(env_var: str | None) -> str | None:
        """The API key, read only from the environment variable the spec names."""
        if env_var is None:
            return None
        key = os.environ.get(env_var)
        if not key:
            raise ValueError(f"api_key_env: environment variable ${env_var} is not set; export the endpoint's API key")
        return key

    def body(self, request: Request, params: SamplingParams) -> dict:
        """The JSON body: `messages` for a chat prompt, `prompt` for raw text (see `endpoint`)."""
        body = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed_for(request.sample_index, request.prompt),
            "n": 1,  # each sample is its own request, so each is cached and retried alone
            **self.extra_body,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if isinstance(request.prompt, str):
            body["prompt"] = request.prompt
            if params.top_logprobs:
                body["logprobs"] = params.top_logprobs  # the completions API takes k here
        else:
            body["messages"] = request.prompt
            if params.top_logprobs:
                body |= {"logprobs": True, "top_logprobs": params.top_logprobs}
        return body

    @staticmethod
    def endpoint(body: dict) -> str:
        return "/completions" if "prompt" in body else "/chat/completions"

    def complete(
        self,
        requests: Sequence[Request],
        params: SamplingParams,
        progress: Progress | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[Completion]:
        coroutine = self.complete_async(requests, params, progress, on_completion)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        # Called from inside a running loop (a notebook): run ours on a thread of its own.
        box: list = []
        thread = threading.Thread(target=lambda: box.append(asyncio.run(coroutine)))
        thread.start()
        thread.join()
        return box[0]

    async def complete_async(
        self,
        requests: Sequence[Request],
        params: SamplingParams,
        progress: Progress | None = None,
        on_completion: OnCompletion | None = None,
    ) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        replicas = itertools.cycle(self.base_urls)
        semaphore = asyncio.Semaphore(self.concurrency)
        done = 0
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as client:

            async def one(i: int) -> None:
                nonlocal done
                async with semaphore:
                    results[i] = await self._with_retries(client, replicas, self.body(requests[i], params))
                done += 1
                if on_completion:
                    on_completion(i, results[i])
                if progress:
                    progress(done, len(requests))

            await asyncio.gather(*(one(i) for i in range(len(requests))))
        return results  # type: ignore[return-value]

    async def _with_retries(self, client: aiohttp.ClientSession, replicas, body: dict) -> Completion:
        reason = "not attempted"
        for attempt in range(self.retry.max_retries + 1):
            url = next(replicas) + self.endpoint(body)
            try:
                return await self._post(client, url, body)
            except PermanentError as err:
                return Completion.failed(str(err))
            except RetryableError as err:
                reason, retry_after = str(err), err.retry_after
            except TimeoutError:
                reason, retry_after = f"{url}: no answer within {self.timeout_s}s", None
            except aiohttp.ClientError as err:  # refused, reset, dropped connection, truncated body
                reason, retry_after = f"{url}: {type(err).__name__}: {err}".rstrip(": "), None
            if attempt < self.retry.max_retries:
                await asyncio.sleep(self.retry.delay(attempt, retry_after, self.rng))
        return Completion.failed(f"gave up after {self.retry.max_retries + 1} attempts; last: {reason}")

    async def _post(self, client: aiohttp.ClientSession, url: str, body: dict) -> Completion:
        self.attempts += 1
        async with client.post(url, data=_encode(body), headers=JSON_CONTENT) as response:
            data = await response.read()
            if response.status != 200:
                message = f"{url}: HTTP {response.status}: {data[:200].decode(errors='replace')}"
                if is_retryable_status(response.status):
                    raise RetryableError(message, parse_retry_after(response.headers.get("Retry-After")))
                raise PermanentError(message)
        # Parsed on the loop, even at 70 kB of top-20 log-probabilities: on a worker thread, the parse holds the
        # interpreter lock all the same, and the hand-offs cost more than it (0.9 ms of CPU a request against 0.6).
        return parse_answer(data, "prompt" not in body, url)


def parse_answer(data: bytes, chat: bool, url: str) -> Completion:
    """The body of an HTTP 200 as a Completion; RetryableError when it holds no answer.

    A body that is not the API's JSON, an answer without content (null or empty) and vLLM's
    `abort` finish reason are failures, retried like a 5xx: none of them is the teacher's answer.
    """
    try:
        completion = chat_completion(_chat_answer(data)) if chat else parse_completion(_loads(data))
    except (msgspec.ValidationError, UnicodeDecodeError, KeyError, IndexError, TypeError, ValueError) as err:
        # A truncated or garbled body from an overloaded proxy: the next try usually works.
        raise RetryableError(f"{url}: malformed response body ({type(err).__name__}: {err})") from None
    if completion.finish_reason == "abort":
        raise RetryableError(f"{url}: the server aborted the request (finish_reason 'abort')")
    if not completion.text:
        field = "message.content" if chat else "text"
        raise RetryableError(f"{url}: HTTP 200 with null or empty {field} (finish_reason {completion.finish_reason!r})")
    return completion


def _loads(data: bytes):
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return json.loads(data)  # NaN or Infinity, which JSON has not but Python's json writes and reads


# A chat completion as the API writes it, the fields read and no others: msgspec decodes the body straight into
# these (skipping the rest), faster than into dicts, and checks the types on the way. gc=False: they hold no
# cycles, so the 1,280 alternatives of a top-20 answer are not tracked by the cycle collector.
class _Alternative(msgspec.Struct, gc=False):
    token: str
    logprob: float


class _Step(msgspec.Struct, gc=False):
    top_logprobs: list[_Alternative] | None = None


class _Logprobs(msgspec.Struct, gc=False):
    content: list[_Step] | None = None


class _Message(msgspec.Struct, gc=False):
    content: str | None = None


class _Choice(msgspec.Struct, gc=False):
    message: _Message
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _Usage(msgspec.Struct, gc=False):
    completion_tokens: int | None = None


class ChatAnswer(msgspec.Struct, gc=False):
    choices: list[_Choice]
    usage: _Usage | None = None


_decode_chat = msgspec.json.Decoder(ChatAnswer).decode


def _chat_answer(data: bytes) -> ChatAnswer:
    try:
        return _decode_chat(data)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError:  # NaN or Infinity, which only Python's json reads
        return msgspec.convert(json.loads(data), ChatAnswer)


def parse_chat_completion(payload: dict) -> Completion:
    """A `/chat/completions` answer, decoded to Python objects."""
    return chat_completion(msgspec.convert(payload, ChatAnswer))


def chat_completion(answer: ChatAnswer) -> Completion:
    choice = answer.choices[0]
    top = None
    content = choice.logprobs.content if choice.logprobs is not None else None
    if content is not None:  # at top-20, 1,280 alternatives an answer, taken on the event loop
        steps = [step.top_logprobs or () for step in content]
        alternatives = list(itertools.chain.from_iterable(steps))
        tokens, logprobs = [a.token for a in alternatives], [a.logprob for a in alternatives]
        top = top_k_of(tokens, logprobs, list(map(len, steps)))
    num_tokens = answer.usage.completion_tokens if answer.usage is not None else None
    if num_tokens is None:
        num_tokens = len(content) if content is not None else 0
    text, finish = choice.message.content or "", choice.finish_reason or "stop"
    return Completion(text=text, num_tokens=num_tokens, finish_reason=finish, top_logprobs=top)


def parse_completion(payload: dict) -> Completion:
    """A `/completions` answer; its top log-probabilities are one {token: logprob} dict per token."""
    choice = payload["choices"][0]
    text = choice.get("text") or ""
    finish = choice.get("finish_reason") or "stop"
    logprobs = choice.get("logprobs") or {}
    steps = logprobs.get("top_logprobs")
    top = None
    tokens = logprobs.get("tokens")
    if steps is not None and tokens is not None and not all(map(_is_token_id, tokens)):
        steps = steps[: _tokens_of(text, tokens)]  # a stop string's token may be listed too
    if steps is not None:
        ranked = [sorted((step or {}).items(), key=lambda item: item[1], reverse=True) for step in steps]
        pairs = [pair for step in ranked for pair in step]
        top = top_k_of([t for t, _ in pairs], [lp for _, lp in pairs], list(map(len, ranked)))
    usage = payload.get("usage") or {}
    num_tokens = usage.get("completion_tokens")
    if num_tokens is None:
        num_tokens = len(logprobs.get("tokens") or []) if logprobs else 0
    return Completion(text=text, num_tokens=int(num_tokens), finish_reason=finish, top_logprobs=top)


TOKEN_ID_PREFIX = "token_id:"  # vLLM's form of a token with `return_tokens_as_token_ids`


_TOKEN_IDS = re.compile(r"token_id:[0-9]+(?:\ntoken_id:[0-9]+)*")  # TOKEN_ID_PREFIX's tokens joined by newlines


def _is_token_id(token: str) -> bool:
    return token.startswith(TOKEN_ID_PREFIX) and token[len(TOKEN_ID_PREFIX) :].isdigit()


def top_k_of(tokens: list[str], logprobs: list[float], counts: list[int]) -> TopK:
    """Every step's alternatives, flat and step after step (`counts[t]` for step t), as a TopK: with ids
    where the server sent them as vLLM's `token_id:N` strings (`return_tokens_as_token_ids`), else with
    the token strings."""
    if tokens and tokens[0].startswith(TOKEN_ID_PREFIX):
        joined = "\n".join(tokens)  # one regex and one split over the lot beat a check per token
        if _TOKEN_IDS.fullmatch(joined):
            ids = joined[len(TOKEN_ID_PREFIX) :].split("\n" + TOKEN_ID_PREFIX)
            if len(ids) == len(tokens):  # else a token held a newline: they are strings
                return TopK.from_flat(logprobs, counts, ids=list(map(int, ids)))
    return TopK.from_flat(logprobs, counts, tokens=tokens)


def _tokens_of(text: str, tokens: list[str]) -> int:
    """How many of the listed tokens make up `text` (llama.cpp also lists the token of the stop string it cut)."""
    count = length = 0
    for token in tokens:
        if length >= len(text):
            break
        count, length = count + 1, length + len(token)
    return count
