"""Shared builders: a small simulated world with a real Feast repository and a real
MLflow store, in temporary folders. Built once per session; tests must not mutate it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from data.simulator import SimulationConfig
from features.store import open_store
from fraudlab.settings import Settings, SimulationSettings, TrainingSettings
from pipelines.world import WorldBuilder, WorldRecipe

warnings.filterwarnings("ignore", category=DeprecationWarning)

# ~150k payments over 75 days: enough known fraud in every period, built in seconds.
TEST_SIMULATION = SimulationSettings(customers=1_000, terminals=2_000, days=75, seed=5)
TEST_TRAINING = TrainingSettings(
    # The mechanics tests (monitor, serving, registry) name fraud_v2's 18 features and
    # need no velocity state; fraud_v3, the demo's default, is served end to end by
    # tests/features/test_velocity_online.py and by every scenario story.
    feature_service="fraud_v2",
    cutoff_day=75,
    warmup_days=10,
    validation_days=12,
    test_days=12,
    gap_days=2,
    label_maturity_days=7,
    bootstrap_rounds=100,
    reference_sample_rows=500,
)


def make_settings(home: Path, **overrides: object) -> Settings:
    return Settings(home=home, simulation=TEST_SIMULATION, training=TEST_TRAINING, **overrides)  # type: ignore[arg-type]


def populate(settings: Settings) -> pd.DataFrame:
    """Generate, build and apply: everything training needs, under settings.home (the
    online store stays empty and no model is trained: tests that need them add them)."""
    builder = WorldBuilder(
        settings, WorldRecipe(SimulationConfig.from_settings(settings.simulation))
    )
    builder.generate()
    builder.build_features()
    builder.apply()
    return builder.transactions


@dataclass(frozen=True)
class World:
    settings: Settings
    transactions: pd.DataFrame


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    settings = make_settings(tmp_path_factory.mktemp("world"))
    return World(settings, populate(settings))


@pytest.fixture(scope="session")
def store(world: World):
    return open_store(world.settings)


def reachable(address: tuple[str, int]) -> bool:
    """Does something accept TCP connections there (a local PostgreSQL, Redis)?"""
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def running_ui(
    command: list[str], health: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[None]:
    """A UI's server (Feast's, Evidently's) as a child process, from the moment GET
    `health` answers 200 (their imports take a while on a busy machine; fails with the
    server's stderr if it exits first) until the block ends."""
    server = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"{health} did not answer in 120 s"
            time.sleep(0.5)
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def services_required() -> bool:
    return os.environ.get("FRAUDLAB_REQUIRE_SERVICES", "") not in ("", "0", "false")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's `chromium`, which `.ci/run` installs), driven by
    Playwright: the UIs are checked as a user sees them, rendered, not through their
    APIs. Skipped where Chromium is absent, failed instead under
    FRAUDLAB_REQUIRE_SERVICES=1.

    One per module, not per session: while Playwright's sync API is open it leaves its
    event loop marked as running on this thread, so any later test in the same worker
    that runs an event loop (the replay client's) fails with "Cannot run the event loop
    while another loop is running" (CI, 2026-12-07: tests/serving/test_docs_page.py then
    test_replay_*.py in one worker)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        message = "Chromium is not installed (Debian: apt-get install chromium)"
        if services_required():
            pytest.fail(f"{message}, and FRAUDLAB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def shows(page: Page, url: str, text: str, screenshot: Path) -> None:
    """Open `url`, wait until `text` is visible on the rendered page (React UIs fill in
    after their API calls), and keep a screenshot, taken whether or not it appeared."""
    page.goto(url)
    try:
        expect(page.get_by_text(text).first).to_be_visible(timeout=30_000)
    finally:
        page.screenshot(path=screenshot, full_page=True)


# Longest first (seconds of one CI run, 2026-12-06): with two workers (`make test` runs
# pytest-xdist), whoever starts the scenario stories (~780 s) finishes them while the
# other worker works down the rest, and the first one free takes the next folder.
FOLDERS_BY_LENGTH = (
    "long_stories",  # the drift story alone (~310 s): the other stories run beside it
    "scenarios",
    "reliability",
    "monitoring",
    "stack",
    "serving",
    "",  # tests/*.py: code quality (a cold mypy) and architecture
    "pipelines",
    "features",
    "data",
)


def _folder(nodeid: str) -> str:
    """`tests/serving/test_api.py::test_x` -> "serving"; tests/*.py -> ""."""
    parts = nodeid.split("::", 1)[0].split("/")
    return parts[1] if len(parts) > 2 else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: FOLDERS_BY_LENGTH.index(_folder(item.nodeid)))


class FolderScheduling:
    """Each test folder runs on one worker: its tests share expensive session fixtures
    (a trained world, a fleet of live servers, the stories' world cache) that a second
    worker would build again. (xdist's own `loadgroup` marks do not take effect with
    pytest 9.2's node ids; a scope per folder is xdist's documented way to the same end.)
    A plugin registered only when xdist is loaded: `pytest -p no:xdist` must still run."""

    @staticmethod
    def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
        from xdist.scheduler import LoadScopeScheduling

        class LoadFolderScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return _folder(nodeid) or "tests"

            def schedule(self) -> None:
                # xdist reorders scopes by test count unless told not to: the few long
                # stories then started last and ran alone for minutes at the end.
                self.config.option.loadscopereorder = False
                super().schedule()

        return LoadFolderScheduling(config, log)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(FolderScheduling(), "fraudlab-folder-scheduling")
