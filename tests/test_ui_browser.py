"""The Dagster UI in a real browser: `dagster dev` on loopback, headless Chromium through Playwright.

Checks that the asset graph shows every asset and its group, then does what a person does to
materialize one partition: on `synthetic_completions`' page, *Materialize…*, one task and one
teacher in the partition picker, *Launch 1 run*; it follows the run to *Success* and reads the
partition as materialized on the asset's Partitions tab (its upstream `curated_inputs` partition
is materialized the same way first). GraphQL only confirms afterwards what the page showed.
Screenshots go to $DISTILL_SCREENSHOTS if set (`DISTILL_SCREENSHOTS=docs` refreshes the ones
under docs/), else to the test's temporary folder. Skipped where Chromium or the `playwright`
package is absent; `.ci/run` installs both.
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

import dagster as dg
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

RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status
  assetSelection { path } tags { key value } } } }"""

TASK, TEACHER = "dates", "teacher_a"
PARTITION = str(dg.MultiPartitionKey({"task": TASK, "teacher": TEACHER}))  # as the UI writes it: dates|teacher_a
RUN_TIMEOUT_MS = 240_000  # one partition of the shrunken spec takes well under a minute on 2 cores


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


def launch_one_partition(page, base: str, asset: str, keys: list[str], confirm: str | None = None, shot=None) -> str:
    """On the asset's page: *Materialize…*, one key per partition dimension in the picker, *Launch 1 run*.

    `keys` in the order the dialog shows the dimensions; `confirm`, the title of the notice the
    UI shows first (a multi-asset's other outputs). Returns the launched run's id, read from the
    toast's *View* link.
    """
    page.goto(f"{base}/assets/{asset}", wait_until="domcontentloaded", timeout=60_000)
    page.get_by_role("button", name=re.compile("Materialize…")).click()
    if confirm:
        notice = page.get_by_role("dialog").filter(has_text=confirm)
        notice.get_by_role("button", name="Confirm").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.wait_for()
    for key in keys:
        dialog.get_by_text("Select a partition or create one").first.click()  # the next dimension's picker
        # The picker's rows write each key twice (shown, and measured for truncation): its title is unique.
        page.get_by_role("menuitem").filter(has=page.get_by_title(key, exact=True)).click()
        dialog.get_by_text("Launch runs to materialize").click()  # closes the picker, not the dialog
        page.get_by_placeholder("Filter partitions").wait_for(state="hidden")
    dialog.get_by_text("1 partition", exact=True).wait_for()
    launch = dialog.get_by_role("button", name="Launch 1 run")
    assert launch.is_enabled()
    if shot:
        page.screenshot(path=str(shot))
    launch.click()
    view = page.get_by_role("link", name="View", exact=True)  # in the "Launched run …" toast
    href = view.get_attribute("href")
    view.click()
    return href.rsplit("/", 1)[-1]


def run_outcome_in_ui(page, run_id: str) -> str:
    """The run's page (opened from the toast) until its header says how it ended; that word."""
    page.wait_for_url(re.compile(f"/runs/{run_id}"), timeout=30_000)
    outcome = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
    outcome.wait_for(timeout=RUN_TIMEOUT_MS)
    return outcome.inner_text().strip()


def partition_materialized_in_ui(page, base: str, asset: str, keys: list[str], partition: str, run_id: str) -> None:
    """The asset's Partitions tab: one partition materialized, and it is `partition`, by `run_id`."""
    page.goto(f"{base}/assets/{asset}?view=partitions", wait_until="domcontentloaded", timeout=60_000)
    page.get_by_role("checkbox", name="Materialized (1)").wait_for(state="attached", timeout=60_000)
    for key in keys:  # one column per dimension
        page.get_by_title(key, exact=True).first.click()
    page.get_by_text(partition, exact=True).first.wait_for()  # the selected partition's header
    page.get_by_text("Materialized", exact=True).first.wait_for()  # its status badge
    run_link = page.get_by_role("link", name=run_id[:8], exact=True)
    assert f"/runs/{run_id}" in run_link.get_attribute("href")


def screenshot_above(page, path: Path, cell: str) -> None:
    """A screenshot cut above a metadata row (the `path` row holds this machine's temporary folder)."""
    size = page.viewport_size
    row = page.get_by_role("cell", name=cell, exact=True)
    box = row.first.bounding_box() if row.count() else None
    height = min(size["height"], int(box["y"]) - 1) if box else size["height"]
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": size["width"], "height": height})


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

        assert len(wait_for("the code location to load", loaded, 240, log, every=2)) == 1
        yield base, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this fixture started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_asset_graph_in_chromium_and_one_partition_materialized_by_clicks(dagster_dev, spec_file, tmp_path):
    base, log = dagster_dev
    shots = Path(os.environ.get("DISTILL_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    graph = build_definitions(spec_file).resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(  # a fresh user-data dir
            str(tmp_path / "chromium"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport={"width": 2400, "height": 2200},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/asset-groups", wait_until="domcontentloaded", timeout=60_000)
            expand_all_groups(page)
            try:
                shown = wait_for("every asset in the graph", lambda: shown_assets(page, groups), 60, log)
            except AssertionError:
                page.screenshot(path=shots / "ui-asset-graph-incomplete.png")  # what the page showed instead
                raise
            assert set(shown) == set(groups), f"assets missing from the graph: {set(groups) - set(shown)}"
            headers = page.locator("foreignObject.group [data-tooltip]").evaluate_all(
                "els => els.map(e => e.getAttribute('data-tooltip'))"
            )
            assert set(groups.values()) <= set(headers), f"groups not shown: {set(groups.values()) - set(headers)}"
            page.wait_for_timeout(1500)  # let the layout settle for the screenshot
            page.screenshot(path=str(shots / "ui-asset-graph.png"))

            # synthetic_completions reads its task's curated prompts: that partition first, as a
            # person would (curated_inputs is a multi-asset, so the UI says its other outputs come along).
            upstream = launch_one_partition(
                page, base, "curated_inputs", [TASK], confirm="Additional assets will be materialized"
            )
            assert run_outcome_in_ui(page, upstream) == "Success", (upstream, log.read_text()[-3000:])

            run_id = launch_one_partition(
                page, base, "synthetic_completions", [TASK, TEACHER], shot=shots / "ui-materialize-dialog.png"
            )
            assert run_outcome_in_ui(page, run_id) == "Success", (run_id, log.read_text()[-3000:])
            page.get_by_text(f"partition: {PARTITION}").first.wait_for()
            page.wait_for_timeout(1000)  # the Gantt chart settles
            page.screenshot(path=str(shots / "ui-run.png"))

            partition_materialized_in_ui(page, base, "synthetic_completions", [TASK, TEACHER], PARTITION, run_id)
            page.wait_for_timeout(1000)
            screenshot_above(page, shots / "ui-partition-materialized.png", "path")
        finally:
            browser.close()

    # What the pages showed, confirmed through the API: the clicks launched exactly this partition
    # of exactly this asset, from the UI.
    run = graphql(base, RUN, {"id": run_id})["runOrError"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert run["status"] == "SUCCESS"
    assert tags.get("dagster/partition") == PARTITION and tags.get("dagster/from_ui") == "true", tags
    assert [a["path"] for a in run["assetSelection"]] == [["synthetic_completions"]]
    for name in ("ui-asset-graph.png", "ui-materialize-dialog.png", "ui-run.png", "ui-partition-materialized.png"):
        assert (shots / name).stat().st_size > 10_000, name
