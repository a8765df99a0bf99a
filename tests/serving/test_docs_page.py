"""The API's interactive documentation, rendered in headless Chromium from a real
server: Swagger UI lists the scoring route. Its scripts are served by the API itself,
so the page works on a machine with no internet (FastAPI's default loads them from a
CDN)."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.sync_api import Browser

from tests.conftest import shows
from tests.serving.conftest import Fleet


def test_docs_render_the_scoring_route_with_no_internet(
    fleet: Fleet, browser: Browser, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    shows(page, f"{fleet.plain.url}/docs", "/v1/score", tmp_path / "docs.png")
    page.close()
    elsewhere = [url for url in asked if httpx.URL(url).host != "127.0.0.1"]
    assert not elsewhere, f"the docs page fetched from outside the machine: {elsewhere}"
