"""A small OpenAI-compatible server on loopback (chat completions and completions), with fault injection.

The tests and benchmarks talk to it as they would to vLLM serve. It answers either
deterministically (the prompt reversed, so a test knows the right answer) or through a
real teacher backend, and injects faults at a given rate: 500s, 429 with Retry-After,
timeouts (no answer before the client gives up), dropped connections and malformed JSON
(and, on request, 401s).
It counts per prompt the requests it received and the answers it delivered.

    python -m tests.openai_server --latency 0.05      # prints its base URL, serves until killed
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("500", "429", "timeout", "drop", "malformed")

# (messages, request body) -> (text, finish_reason, per-token top logprobs or None)
Answer = Callable[[list[dict], dict], tuple[str, str, list[list[tuple[str, float]]] | None]]


def reverse_answer(messages: list[dict], body: dict):
    """The last user message reversed, cut at max_tokens characters (one token per character)."""
    text = messages[-1]["content"][::-1]
    for stop in body.get("stop") or []:  # the text before the first stop string, as servers do
        text = text.split(stop)[0]
    limit = int(body.get("max_tokens") or len(text))
    finish = "length" if len(text) > limit else "stop"
    text = text[:limit]
    k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    top = [[(ch, -0.01), *[(f"<alt{j}>", -5.0 - j) for j in range(k - 1)]] for ch in text] if k else None
    return text, finish, top


class FakeTeacher:
    """The server's behaviour and its counters (shared by all handler threads)."""

    def __init__(
        self,
        answer: Answer = reverse_answer,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        faulty_attempts: int = 2,  # only a prompt's first attempts fail, so retries always get through
        latency_s: float = 0.0,
        hang_s: float = 1.0,  # how long a "timeout" fault holds the request before dropping it
        retry_after: str = "0",
        seed: int = 0,
    ):
        self.answer, self.fault_rate, self.faults = answer, fault_rate, faults
        self.faulty_attempts, self.latency_s, self.hang_s = faulty_attempts, latency_s, hang_s
        self.retry_after, self.seed = retry_after, seed
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # per prompt: requests received
        self.answers: Counter[str] = Counter()  # per prompt: 200 answers delivered
        self.injected: Counter[str] = Counter()  # per fault kind
        self.endpoints: Counter[str] = Counter()  # per path: /v1/chat/completions, /v1/completions
        self.authorization: set[str] = set()

    def fault_for(self, prompt: str, attempt: int) -> str | None:
        if attempt > self.faulty_attempts or not self.fault_rate:
            return None
        rng = random.Random(f"{self.seed}|{prompt}|{attempt}")
        return rng.choice(self.faults) if rng.random() < self.fault_rate else None


def make_handler(teacher: FakeTeacher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        disable_nagle_algorithm = True  # headers and body leave at once, no 40 ms delayed-ACK stall

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_GET(self) -> None:  # the model list, which launchers poll to know the server is up
            if self.path.rstrip("/") != "/v1/models":
                return self._send(404, b'{"error": "not found"}')
            models = {"object": "list", "data": [{"id": "fake-teacher", "object": "model"}]}
            return self._send(200, json.dumps(models).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            legacy = not self.path.endswith("/chat/completions")  # /completions: a raw prompt, k in `logprobs`
            if legacy:
                k = int(body.get("logprobs") or 0)
                body = {**body, "logprobs": k > 0, "top_logprobs": k}
                messages = [{"role": "user", "content": body["prompt"]}]
            else:
                messages = body["messages"]
            prompt = messages[-1]["content"]
            with teacher.lock:
                teacher.endpoints[self.path] += 1
                teacher.requests[prompt] += 1
                attempt = teacher.requests[prompt]
                if self.headers.get("Authorization"):
                    teacher.authorization.add(self.headers["Authorization"])
            fault = teacher.fault_for(prompt, attempt)
            if fault:
                with teacher.lock:
                    teacher.injected[fault] += 1
            if teacher.latency_s:
                time.sleep(teacher.latency_s)
            if fault == "401":  # a client error: retrying cannot help
                return self._send(401, b'{"error": "invalid API key"}')
            if fault == "500":
                return self._send(500, b'{"error": "injected"}')
            if fault == "429":
                return self._send(429, b'{"error": "slow down"}', {"Retry-After": teacher.retry_after})
            if fault in ("timeout", "drop"):
                if fault == "timeout":
                    time.sleep(teacher.hang_s)
                self.close_connection = True  # close without a response
                return None
            if fault == "malformed":
                return self._send(200, b'{"choices": [{"message": {"content": "trunc')
            text, finish, top = teacher.answer(messages, body)
            if legacy:
                return self._deliver(prompt, _completions_payload(body, text, finish, top))
            choice: dict = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            if top is not None:
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": step[0][0],
                            "logprob": step[0][1],
                            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in step],
                        }
                        for step in top
                    ]
                }
            payload = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [choice],
                "usage": {"completion_tokens": len(top) if top is not None else len(text)},
            }
            return self._deliver(prompt, payload)

        def _deliver(self, prompt: str, payload: dict) -> None:
            try:
                self._send(200, json.dumps(payload).encode())
            except (BrokenPipeError, ConnectionResetError):
                return None  # the client had given up: not an answer delivered
            with teacher.lock:
                teacher.answers[prompt] += 1
            return None

    return Handler


def _completions_payload(body: dict, text: str, finish: str, top) -> dict:
    """A `/completions` answer, log-probabilities in that API's form: one {token: logprob} dict per token."""
    choice: dict = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    if top is not None:
        choice["logprobs"] = {
            "tokens": [step[0][0] for step in top],
            "token_logprobs": [step[0][1] for step in top],
            "top_logprobs": [dict(step) for step in top],
        }
    usage = {"completion_tokens": len(top) if top is not None else len(text)}
    model = body.get("model")
    return {"id": "cmpl-test", "object": "text_completion", "model": model, "choices": [choice], "usage": usage}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once; the default backlog of 5 drops some


class OpenAIServer:
    """`with OpenAIServer(FakeTeacher(...)) as server: server.url` -> http://127.0.0.1:PORT/v1"""

    def __init__(self, teacher: FakeTeacher | None = None, port: int = 0):
        self.teacher = teacher or FakeTeacher()
        self.httpd = _Server(("127.0.0.1", port), make_handler(self.teacher))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> OpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with OpenAIServer(FakeTeacher(latency_s=args.latency), port=args.port) as server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()


class TeacherAndJudge(FakeTeacher):
    """Reverses prompts as the teacher; as the judge answers `Score: <score>`, or fails (HTTP 500) the judge
    requests whose prompt's crc32 is a multiple of `fail_every` while `failing` is set."""

    def __init__(self, score: int, fail_every: int):
        super().__init__(answer=self.reply)
        self.score, self.fail_every, self.failing = score, fail_every, True

    @staticmethod
    def judged(prompt: str) -> bool:
        return prompt.startswith("Question:")

    def fails(self, prompt: str) -> bool:
        return self.failing and self.judged(prompt) and zlib.crc32(prompt.encode()) % self.fail_every == 0

    def fault_for(self, prompt: str, attempt: int) -> str | None:
        return "500" if self.fails(prompt) else None

    def reply(self, messages: list[dict], body: dict):
        if self.judged(messages[-1]["content"]):
            return f"Score: {self.score}", "stop", None
        return reverse_answer(messages, body)

    def judge_prompts(self) -> list[str]:
        return [p for p in self.requests if self.judged(p)]

    def judge_requests(self) -> int:
        return sum(n for prompt, n in self.requests.items() if self.judged(prompt))
