"""A GGUF file served on loopback as an OpenAI-compatible teacher (llama.cpp's server), for as long as it is needed.

    python -m distill_assets.serve --gguf FILE [--port N] -- COMMAND...

starts `python -m llama_cpp.server --model FILE --host 127.0.0.1 --port N` (the `[llama-cpp]` extra,
`pip install -e '.[llama-cpp]'`: llama-cpp-python[server], built from source), waits until
`GET /v1/models` answers, runs COMMAND with `DISTILL_TEACHER_URL=http://127.0.0.1:N/v1` in its
environment, and stops the server when COMMAND ends, fails or is interrupted. The exit status is
COMMAND's. A spec names that endpoint as `base_urls: ["${DISTILL_TEACHER_URL}"]` (`envrefs.expand_env`).
From Python:

    with llama_server(gguf) as server:
        HttpBackend([server.url], model=server.model)...
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from distill_assets.envrefs import URL_ENV

HOST = "127.0.0.1"


class ServerNotReady(RuntimeError):
    """The server exited, or did not answer `GET /v1/models` in time; the message holds its last log lines."""


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on now (the OS picks it), for a server about to start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class LocalServer:
    """A server process on loopback: started, waited for until `GET {url}/models` answers 200, stopped on exit.

    Its stdout and stderr go to `log_path` (a temporary file unless given, removed after a clean
    stop), whose last lines an error quotes. The process runs in a session of its own, so a Ctrl-C meant for the caller
    reaches it only through `stop`.
    """

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        model: str,
        ready_timeout_s: float = 120.0,
        log_path: Path | None = None,
        host: str = HOST,
    ):
        self.argv, self.port, self.model, self.host = list(argv), port, model, host
        self.url = f"http://{host}:{port}/v1"
        self.ready_timeout_s = ready_timeout_s
        self.keep_log = log_path is not None
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LocalServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if port_in_use(self.port, self.host):
            raise ServerNotReady(f"port {self.port} on {self.host} is in use; choose another or leave --port out")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="server_", suffix=".log")
            self.log_path, log = Path(name), os.fdopen(fd, "wb")
        else:
            log = open(self.log_path, "wb")  # noqa: SIM115 - closed below, once the process holds it
        with log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def wait_ready(self, poll_s: float = 0.2) -> None:
        """Returns when `GET {url}/models` answers 200; raises `ServerNotReady` if the process exits or time is up."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.process.poll() is not None:
                raise ServerNotReady(self._failure(f"exited with status {self.process.returncode} before answering"))
            if self._answers():
                return
            if time.monotonic() >= deadline:
                raise ServerNotReady(self._failure(f"did not answer GET {self.url}/models in {self.ready_timeout_s}s"))
            time.sleep(poll_s)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=2) as response:
                return response.status == 200
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, not HTTP yet
            return False

    def _failure(self, what: str, lines: int = 20) -> str:
        self.keep_log = True  # the message names it
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        shown = "\n".join(f"  {line}" for line in tail) or "  (nothing)"
        return f"server {' '.join(self.argv)!r} {what}; its last output ({self.log_path}):\n{shown}"

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminates the server (SIGTERM, then SIGKILL after `grace_s`) and removes a temporary log."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log_path is not None and not self.keep_log:
            self.log_path.unlink(missing_ok=True)


def llama_command(
    gguf: Path, port: int, model: str, context: int = 2048, threads: int | None = None, python: str = sys.executable
) -> list[str]:
    """The llama.cpp server's command line: one model on loopback, logits of every token kept (for logprobs).

    `threads` None leaves llama.cpp's default (half the cores for generation, all for prompts).
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModuleNotFoundError("llama.cpp's server is not installed: pip install -e '.[llama-cpp]' (a source build)")
    argv = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", model]
    argv += ["--host", HOST, "--port", str(port), "--n_ctx", str(context)]
    argv += ["--logits_all", "true"]  # completions return logprobs only when every position's logits are kept
    return argv + (["--n_threads", str(threads)] if threads else [])


def llama_server(
    gguf: str | Path,
    port: int | None = None,
    context: int = 2048,
    threads: int | None = None,
    ready_timeout_s: float = 120.0,
    log_path: Path | None = None,
) -> LocalServer:
    """A `LocalServer` for llama.cpp's server on `gguf`, its model named after the file (without .gguf)."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"--gguf: {gguf} is not a file")
    port = port or free_port()
    model = gguf.name.removesuffix(".gguf")
    argv = llama_command(gguf.resolve(), port, model, context, threads)
    return LocalServer(argv, port, model, ready_timeout_s, log_path)


def run_with_server(server: LocalServer, command: Sequence[str]) -> int:
    """Runs `command` with the server's URL in `DISTILL_TEACHER_URL`, the server up around it; its exit status."""
    with server:
        print(f"serving {server.model} at {server.url}", file=sys.stderr, flush=True)
        return subprocess.run(list(command), env=os.environ | {URL_ENV: server.url}).returncode


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], usage="%(prog)s --gguf FILE [options] -- COMMAND..."
    )
    parser.add_argument("--gguf", required=True, type=Path, help="the model file to serve")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--context", type=int, default=2048, help="context length in tokens (llama.cpp's n_ctx)")
    parser.add_argument("--threads", type=int, default=None, help="generating threads (default: half the cores)")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for the server")
    parser.add_argument("--log", type=Path, default=None, help="keep the server's output in this file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="after --: what to run while the server is up")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("give the command to run after --, e.g. -- python -m distill_assets.run --spec SPEC")
    if args.port is not None and not 0 < args.port < 65536:
        parser.error(f"--port: {args.port} is not a TCP port")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C does, so the server is stopped either way.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        server = llama_server(args.gguf, args.port, args.context, args.threads, args.ready_timeout, args.log)
        return run_with_server(server, args.command)
    except (ServerNotReady, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
