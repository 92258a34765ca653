"""The launcher that serves a GGUF on loopback for a command, against stand-in servers (no llama.cpp build needed).

The stand-ins are python processes: the project's fake OpenAI server (tests/openai_server.py, which
answers GET /v1/models as llama.cpp's server does), and one-liners that never listen or die at once.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from distill_assets import serve
from distill_assets.envrefs import expand_env
from distill_assets.serve import LocalServer, ServerNotReady, free_port, port_in_use, run_with_server

PROJECT_DIR = Path(__file__).resolve().parent.parent
FAKE_SERVER = PROJECT_DIR / "tests" / "openai_server.py"
# A command for the served time: it records the URL it was given and what the server's model list says.
REPORT_URL = (
    "import json, os, sys, urllib.request; url = os.environ['DISTILL_TEACHER_URL']; "
    "models = json.load(urllib.request.urlopen(url + '/models')); "
    "open(sys.argv[1], 'w').write(json.dumps({'url': url, 'model': models['data'][0]['id']}))"
)


def fake_server(port: int, **kwargs) -> LocalServer:
    return LocalServer([sys.executable, str(FAKE_SERVER), "--port", str(port)], port, "fake-teacher", **kwargs)


def one_liner(code: str, **kwargs) -> LocalServer:
    return LocalServer([sys.executable, "-c", code], free_port(), "m", **kwargs)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError):
        return False


def test_arguments_split_at_the_double_dash():
    args = serve.parse_args(["--gguf", "m.gguf", "--port", "8080", "--", "python", "-m", "x", "--port", "9"])
    assert args.gguf == Path("m.gguf") and args.port == 8080
    assert args.command == ["python", "-m", "x", "--port", "9"]  # the command keeps its own options
    assert serve.parse_args(["--gguf", "m.gguf", "--", "true"]).port is None  # a free port is chosen later


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gguf", "m.gguf"], "give the command to run after --"),
        (["--gguf", "m.gguf", "--"], "give the command to run after --"),
        (["--gguf", "m.gguf", "--port", "70000", "--", "true"], "--port: 70000 is not a TCP port"),
        (["--", "true"], "--gguf"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        serve.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_free_port_is_free_and_a_listened_port_is_not():
    port = free_port()
    assert not port_in_use(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_in_use(port)
        with pytest.raises(ServerNotReady, match=f"port {port} on 127.0.0.1 is in use"):
            fake_server(port).start()


def test_a_server_that_never_listens_times_out_with_its_last_output():
    server = one_liner("import time; print('loading weights', flush=True); time.sleep(60)", ready_timeout_s=0.5)
    expected = r"did not answer GET http://127\.0\.0\.1:\d+/v1/models in 0\.5s"
    with pytest.raises(ServerNotReady, match=expected) as err, server:
        pass
    assert "loading weights" in str(err.value) and str(server.log_path) in str(err.value)
    assert server.process.poll() is not None  # stopped, not left running
    assert server.log_path.read_text() == "loading weights\n"  # kept, since the error names it
    server.log_path.unlink()


def test_a_server_that_dies_is_reported_at_once_with_its_status_and_output(tmp_path):
    log = tmp_path / "server.log"
    server = one_liner("import sys; print('bad magic in model file', file=sys.stderr); sys.exit(3)", log_path=log)
    with pytest.raises(ServerNotReady, match="exited with status 3 before answering") as err, server:
        pass
    assert "bad magic in model file" in str(err.value) and str(log) in str(err.value)
    assert log.read_text().strip() == "bad magic in model file"  # a log asked for is kept


def test_the_command_gets_the_url_and_the_server_stops_after(tmp_path):
    server = fake_server(free_port())
    status = run_with_server(server, [sys.executable, "-c", REPORT_URL, str(tmp_path / "seen.json")])
    assert status == 0
    assert json.loads((tmp_path / "seen.json").read_text()) == {"url": server.url, "model": "fake-teacher"}
    assert server.process.poll() is not None and not answers(server.url)
    assert not server.log_path.exists()  # a temporary log goes after a clean stop


def test_the_exit_status_is_the_commands_and_the_server_stops_on_failure():
    server = fake_server(free_port())
    assert run_with_server(server, [sys.executable, "-c", "raise SystemExit(7)"]) == 7
    assert server.process.poll() is not None
    server = fake_server(free_port())
    with pytest.raises(RuntimeError), server:
        assert answers(server.url)
        raise RuntimeError("the body failed")
    assert server.process.poll() is not None and not answers(server.url)


def fake_llama_command(gguf, port, model, context=2048, threads=None):
    return [sys.executable, str(FAKE_SERVER), "--port", str(port)]


def test_cli_serves_the_file_for_the_command(tmp_path, monkeypatch):
    gguf = tmp_path / "Tiny-Model.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(serve, "llama_command", fake_llama_command)
    seen = tmp_path / "seen.json"
    assert serve.main(["--gguf", str(gguf), "--", sys.executable, "-c", REPORT_URL, str(seen)]) == 0
    assert json.loads(seen.read_text())["url"].startswith("http://127.0.0.1:")


def test_cli_names_a_missing_model_file(tmp_path, capsys):
    assert serve.main(["--gguf", str(tmp_path / "absent.gguf"), "--", "true"]) == 1
    assert f"--gguf: {tmp_path / 'absent.gguf'} is not a file" in capsys.readouterr().err


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cli_stops_the_server_when_it_is_interrupted(tmp_path, signum, status):
    """Killed (SIGTERM) or interrupted (Ctrl-C) while the command runs, the launcher stops the server first."""
    gguf, seen = tmp_path / "m.gguf", tmp_path / "seen.json"
    gguf.write_bytes(b"GGUF")
    waiting = REPORT_URL + "; import time; time.sleep(60)"
    launcher = (
        # Ctrl-C raises KeyboardInterrupt as in a terminal, even where this test runs with SIGINT ignored (a
        # background job of a non-interactive shell), which the launcher would inherit
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from distill_assets import serve; from tests.test_serve import fake_llama_command; "
        "serve.llama_command = fake_llama_command; sys.exit(serve.main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", launcher, "--gguf", str(gguf), "--", sys.executable, "-c", waiting, str(seen)]
    with subprocess.Popen(argv, cwd=PROJECT_DIR, env={"PYTHONPATH": str(PROJECT_DIR)}) as process:
        deadline = time.monotonic() + 60
        while not seen.exists() or not seen.read_text():
            assert process.poll() is None and time.monotonic() < deadline, "the command never ran"
            time.sleep(0.05)
        url = json.loads(seen.read_text())["url"]
        assert answers(url)
        process.send_signal(signum)
        assert process.wait(30) == status
    assert not answers(url)


def test_env_references_expand_and_an_unset_one_is_named():
    environ = {"DISTILL_TEACHER_URL": "http://127.0.0.1:4321/v1", "HOST": "gpu-7"}
    assert expand_env("${DISTILL_TEACHER_URL}", environ) == "http://127.0.0.1:4321/v1"
    assert expand_env("http://${HOST}:8000/v1", environ) == "http://gpu-7:8000/v1"
    assert expand_env("http://plain:8000/v1", {}) == "http://plain:8000/v1"
    with pytest.raises(ValueError, match=r"base_urls: '\$\{DISTILL_TEACHER_URL\}' names \$DISTILL_TEACHER_URL, wh"):
        expand_env("${DISTILL_TEACHER_URL}", {})


def test_llama_command_serves_one_model_on_loopback_with_logprobs(monkeypatch):
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[llama-cpp\]'"):
        serve.llama_command(Path("/m.gguf"), 8123, "m")
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: object())
    argv = serve.llama_command(Path("/m.gguf"), 8123, "m")
    assert argv[1:3] == ["-m", "llama_cpp.server"]
    assert dict(zip(argv[3::2], argv[4::2])) == {
        "--model": "/m.gguf",
        "--model_alias": "m",
        "--host": "127.0.0.1",
        "--port": "8123",
        "--n_ctx": "2048",
        "--logits_all": "true",
    }
    argv = serve.llama_command(Path("/m.gguf"), 8123, "m", threads=3)
    assert dict(zip(argv[3::2], argv[4::2])) == {
        "--model": "/m.gguf",
        "--model_alias": "m",
        "--host": "127.0.0.1",
        "--port": "8123",
        "--n_ctx": "2048",
        "--n_threads": "3",
        "--logits_all": "true",
    }
