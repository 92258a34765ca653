"""HTTP backend at concurrency 32 against sequential requests, on a loopback server with 50 ms latency (target >= 25x).

python -m bench.http_concurrency [--requests 640] [--concurrency 32] [--latency 0.05]

Also prints the client's CPU time per request (this process's, `time.process_time`; the
server runs in a process of its own): the figure bench/scaling_estimate.py takes as
`--client-cpu-ms`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from resources.backends import Request, SamplingParams
from resources.http_backend import HttpBackend

PROJECT_DIR = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--sequential", type=int, default=40, help="requests timed for the sequential rate")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()

    # The server runs in its own process, so it does not share this one's interpreter lock.
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--latency", str(args.latency)],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        requests = [Request([{"role": "user", "content": f"prompt {i}"}]) for i in range(args.requests)]
        params = SamplingParams(max_new_tokens=16)

        # Baseline: a plain loop, one request after the other.
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)  # kept alive
        started, cpu = time.perf_counter(), time.process_time()
        for request in requests[: args.sequential]:
            body = json.dumps({"model": "m", "messages": request.prompt, "max_tokens": 16})
            connection.request("POST", f"{parts.path}/chat/completions", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())["choices"]
        sequential_rate = args.sequential / (time.perf_counter() - started)
        sequential_cpu = (time.process_time() - cpu) / args.sequential
        connection.close()

        backend = HttpBackend([url], model="m", concurrency=args.concurrency, timeout_s=30)
        backend.complete(requests[: args.concurrency], params)  # warm up: imports and connections
        started, cpu = time.perf_counter(), time.process_time()
        completions = backend.complete(requests, params)
        concurrent_s = time.perf_counter() - started
        concurrent_cpu = (time.process_time() - cpu) / args.requests
        assert all(c.ok for c in completions), [c.error for c in completions if not c.ok][:3]
        concurrent_rate = args.requests / concurrent_s
    finally:
        server.kill()
        server.wait()

    ideal = args.concurrency
    print(f"loopback server, {args.latency * 1000:.0f} ms per request")
    print(f"sequential:        {sequential_rate:7.1f} requests/s ({args.sequential} requests)")
    print(f"concurrency {args.concurrency:3d}:    {concurrent_rate:7.1f} requests/s ({args.requests} requests)")
    print(f"speed-up: {concurrent_rate / sequential_rate:.1f}x (target >= 25x, ideal {ideal}x)")
    print(f"client CPU per request: {concurrent_cpu * 1e3:.2f} ms at concurrency {args.concurrency} (aiohttp), "
          f"{sequential_cpu * 1e3:.2f} ms sequential (http.client)")  # fmt: skip


if __name__ == "__main__":
    main()
