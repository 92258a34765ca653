"""The Dagster UI in a real browser: `dagster dev` on loopback, headless Chromium through Playwright.

Checks that the asset graph shows every asset and its group, launches one partition's
materialization through the UI's GraphQL API, waits for it to succeed, and saves
screenshots (to $DISTILL_SCREENSHOTS if set, else the test's temporary folder).
Skipped where Chromium or the `playwright` package is absent; `.ci/run` installs both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from distill_assets.definitions import build_definitions
from tests.conftest import PROJECT_DIR

CHROMIUM = os.environ.get("DISTILL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None, reason="the `playwright` package is not installed (pip install -e '.[dev]')"
    ),
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set $DISTILL_CHROMIUM)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(base: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{base}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


def wait_for(what: str, check, timeout: float, log: Path, every: float = 1.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            result = check()
            if result:
                return result
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
            last = err
        time.sleep(every)
    tail = log.read_text()[-3000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})\n{tail}")


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message } ... on InvalidSubsetError { message } ... on InvalidStepError { invalidStepKey }
  ... on RunConfigValidationInvalid { errors { message } } ... on PipelineNotFoundError { message } } }"""

RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"""


def expand_all_groups(page) -> None:
    """Groups start collapsed; the graph's settings menu expands them (and a first visit shows a dialog)."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=8_000)
        skip.click()
    except PlaywrightTimeout:
        pass
    page.locator("foreignObject.group").first.wait_for(state="attached", timeout=60_000)
    page.get_by_role("button").filter(has=page.locator("[aria-label=settings]")).last.click()  # the graph's
    page.get_by_role("menuitem", name=re.compile("Expand all groups")).click()
    page.keyboard.press("Escape")


def shown_assets(page, expected) -> list[str]:
    """The expected asset names the graph shows; zoomed out, it middle-truncates long ones (synth…_completions)."""
    texts = page.locator("[class*=AssetNode_assetName]").all_text_contents()

    def shows(name: str) -> bool:
        for text in texts:
            left, dots, right = text.strip().partition("…")
            if text.strip() == name or (dots and name.startswith(left) and name.endswith(right)):
                return True
        return False

    found = [name for name in expected if shows(name)]
    return found if len(found) == len(expected) else []


@pytest.fixture
def dagster_dev(tmp_path, spec_file):
    """`dagster dev` for the shrunken spec on a free loopback port; stopped (its process group) after."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DISTILL_SPEC": str(spec_file), "PYTHONPATH": str(PROJECT_DIR)}
    log = tmp_path / "dagster_dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-m", "distill_assets.definitions", "-h", "127.0.0.1", "-p",
             str(port)],
            cwd=PROJECT_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def loaded():
            entries = graphql(base, LOCATIONS, timeout=10)["workspaceOrError"]["locationEntries"]
            for entry in entries:
                error = entry["locationOrLoadError"]
                assert not error or error["__typename"] != "PythonError", error
            return [e["name"] for e in entries if e["loadStatus"] == "LOADED"]

        (location,) = wait_for("the code location to load", loaded, 240, log, every=2)
        yield base, location, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this fixture started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_asset_graph_in_chromium_and_a_partition_materialized_through_the_ui(dagster_dev, spec_file, tmp_path):
    base, location, log = dagster_dev
    shots = Path(os.environ.get("DISTILL_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    graph = build_definitions(spec_file).resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(  # a fresh user-data dir
            str(tmp_path / "chromium"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport={"width": 1800, "height": 1100},
        )
        try:
            page = browser.new_page()
            page.goto(f"{base}/asset-groups", wait_until="domcontentloaded", timeout=60_000)
            expand_all_groups(page)
            shown = wait_for("every asset in the graph", lambda: shown_assets(page, groups), 60, log)
            assert set(shown) == set(groups), f"assets missing from the graph: {set(groups) - set(shown)}"
            headers = page.locator("foreignObject.group [data-tooltip]").evaluate_all(
                "els => els.map(e => e.getAttribute('data-tooltip'))"
            )
            assert set(groups.values()) <= set(headers), f"groups not shown: {set(groups.values()) - set(headers)}"
            page.wait_for_timeout(1500)  # let the layout settle for the screenshot
            page.screenshot(path=str(shots / "ui-asset-graph.png"))

            launched = graphql(
                base,
                LAUNCH,
                {
                    "params": {
                        "selector": {
                            "repositoryLocationName": location,
                            "repositoryName": "__repository__",
                            "jobName": "__ASSET_JOB",
                            "assetSelection": [
                                {"path": ["curated_inputs"]},
                                {"path": ["eval_set"]},
                                {"path": ["dev_set"]},
                            ],
                        },
                        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "dates"}]},
                    }
                },
            )["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_id = launched["run"]["runId"]

            def finished():
                status = graphql(base, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
                return status if status in {"SUCCESS", "FAILURE", "CANCELED"} else None

            assert wait_for(f"run {run_id}", finished, 300, log, every=2) == "SUCCESS"
            page.goto(f"{base}/runs/{run_id}", wait_until="domcontentloaded", timeout=60_000)
            page.get_by_text("Success", exact=False).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "ui-run.png"))
            page.goto(f"{base}/assets/curated_inputs?view=partitions", wait_until="domcontentloaded", timeout=60_000)
            page.get_by_text("dates", exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "ui-partitions.png"))
        finally:
            browser.close()
    for name in ("ui-asset-graph.png", "ui-run.png", "ui-partitions.png"):
        assert (shots / name).stat().st_size > 10_000, name
