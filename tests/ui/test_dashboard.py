"""The web dashboard at ``/ui``, driven in headless Chromium by Playwright, against a real
server with the bundled model: sign in, endpoints, a streamed playground answer, the
live charts, recent errors, routes, usage.

Uses Debian's ``chromium`` (``MODELPLANE_TEST_CHROMIUM``, default ``/usr/bin/chromium``),
never a browser downloaded by Playwright. Without Chromium or the ``playwright`` package
the module is skipped, unless ``MODELPLANE_REQUIRE_SERVICES=1`` (CI), where it fails.
Screenshots go to ``$MODELPLANE_TEST_ARTIFACTS`` (default ``test-artifacts/ui``), one per
step and one at the end of every test, passed or failed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN_KEY, Server

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # checked by the fixture below, which skips or fails with a reason
    sync_playwright = None

CHROMIUM = os.environ.get("MODELPLANE_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get(
        "MODELPLANE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
    )
)
REQUIRE_SERVICES = os.environ.get("MODELPLANE_REQUIRE_SERVICES") == "1"
POSITIVE = re.compile(r"^(?!0(\.0+)?$)\d+(\.\d+)?$")
"""A number above zero, as the dashboard writes it into ``data-*`` attributes."""


def _missing() -> str | None:
    if sync_playwright is None:
        return "the 'playwright' package is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module", autouse=True)
def browser() -> Iterator[Browser]:
    missing = _missing()
    if missing:
        if REQUIRE_SERVICES:
            pytest.fail(f"browser tests are required (MODELPLANE_REQUIRE_SERVICES=1) but {missing}")
        pytest.skip(missing)
    assert sync_playwright is not None
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The bundled model, one replica, on SQLite: the dashboard does not care which
    database is behind the API, and one browser run is enough."""
    home = tmp_path_factory.mktemp("home")
    server = Server(home, f"sqlite:///{home / 'modelplane.db'}").start()
    try:
        resp = server.http.post(
            "/api/endpoints", json={"name": "smollm2", "model": "smollm2", "replicas": 1}
        )
        assert resp.status_code == 201, resp.text
        server.wait_ready("smollm2", 1)
        yield server
    finally:
        server.close()


@pytest.fixture
def page(browser: Browser, server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.base_url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    crashes: list[Any] = []
    page.on("pageerror", lambda error: crashes.append(error))
    # Everything must come from the server itself: the page's Content-Security-Policy
    # refuses anything else, and says so on the console.
    page.on(
        "console",
        lambda m: crashes.append(m.text) if "Content Security Policy" in m.text else None,
    )
    try:
        yield page
    finally:
        shot(page, request.node.name)
        context.close()
    assert not crashes, f"the dashboard threw or broke its policy: {crashes}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def sign_in(page: Page, key: str = ADMIN_KEY) -> None:
    page.goto("/ui")  # redirected to /ui/
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def go(page: Page, section: str) -> None:
    page.get_by_role("link", name=section).click()


def test_a_wrong_key_is_refused_with_a_clear_error(page: Page) -> None:
    sign_in(page, "mp-not-a-key-0123456789abcdefghijklmnop")
    expect(page.locator("#login-error")).to_contain_text("This key was not accepted (401)")
    expect(page.locator("#app")).to_be_hidden()
    shot(page, "01-login-refused")


def test_signing_in_shows_the_bundled_endpoint_ready(page: Page) -> None:
    sign_in(page)
    row = page.locator('tr[data-endpoint="smollm2"]')
    expect(row.locator("[data-status]")).to_have_text("ready")
    expect(row).to_contain_text("llamacpp")
    expect(row).to_contain_text("#0 ready")
    expect(row).to_contain_text("0 restarts")
    shot(page, "02-endpoints")
    page.reload()  # the key is kept for the tab's session
    expect(row.locator("[data-status]")).to_have_text("ready")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()


def test_a_playground_answer_streams_in_and_shows_in_the_charts(page: Page) -> None:
    sign_in(page)
    go(page, "Playground")
    expect(page.locator('#play-model option[value="smollm2"]')).to_have_count(1)
    page.locator("#play-model").select_option("smollm2")
    # Record what the answer's bubble shows while it is still streaming.
    page.evaluate(
        """() => {
            window.partials = [];
            new MutationObserver(() => {
                const all = document.querySelectorAll(".msg.assistant");
                const last = all[all.length - 1];
                if (last && last.classList.contains("streaming")) {
                    window.partials.push(last.textContent);
                }
            }).observe(document.querySelector("#play-transcript"),
                       {childList: true, subtree: true, characterData: true});
        }"""
    )
    page.get_by_placeholder("Send a message").fill("What is the capital of France?")
    page.get_by_role("button", name="Send").click()
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-done", "true", timeout=90_000)
    expect(answer).to_contain_text("Paris")
    expect(page.locator("#play-error")).to_be_hidden()
    expect(page.locator(".msg-meta")).to_contain_text("served by smollm2")
    partials = [p for p in page.evaluate("window.partials") if p]
    final = answer.text_content() or ""
    assert len(set(partials)) >= 2, partials  # the text grew while the answer streamed
    assert all(final.startswith(p) for p in partials)
    assert int(answer.get_attribute("data-chunks") or 0) > 1
    shot(page, "03-playground")

    go(page, "Live metrics")
    for metric in ("requests", "rps", "p50_ms", "ttft_p50_ms", "tokens_per_s"):
        tile = page.locator(f'.tile[data-metric="{metric}"]')
        expect(tile).to_have_attribute("data-value", POSITIVE)
    expect(page.locator("#chart-rps svg")).to_have_attribute("data-points", POSITIVE)
    expect(page.locator("#chart-ttft svg")).to_have_attribute("data-points", POSITIVE)
    expect(page.locator("#chart-tokens svg")).to_have_attribute("data-points", POSITIVE)
    expect(page.locator('#metrics-endpoints tr[data-endpoint="smollm2"]')).to_be_visible()
    page.locator("#chart-latency svg").hover()  # shows the values under the pointer
    shot(page, "04-metrics")
    page.locator("#metrics-endpoint").select_option("smollm2")  # one endpoint's series
    expect(page.locator('.tile[data-metric="requests"]')).to_have_attribute("data-value", POSITIVE)
    expect(page.locator("#chart-tokens svg")).to_have_attribute("data-points", POSITIVE)


def test_recent_errors_list_a_failed_request(page: Page, server: Server) -> None:
    resp = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {ADMIN_KEY}", "x-request-id": "ui-test-missing"},
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 404
    sign_in(page)
    go(page, "Recent errors")
    row = page.locator("#errors-body tr", has_text="ui-test-missing")
    expect(row).to_contain_text("404")
    expect(row).to_contain_text("no-such-model")
    expect(row).to_contain_text("does not exist")
    shot(page, "05-errors")


def test_the_routes_page_lists_a_route_with_its_weights(page: Page, server: Server) -> None:
    spec = {
        "targets": [{"endpoint": "smollm2", "weight": 90}],
        "fallbacks": ["smollm2"],
        "aliases": ["dashboard-alias"],
    }
    resp = server.http.put("/api/routes/dashboard-demo", json=spec)
    assert resp.status_code == 201, resp.text
    try:
        sign_in(page)
        go(page, "Routes")
        row = page.locator('tr[data-route="dashboard-demo"]')
        expect(row.locator('[data-target="smollm2"]')).to_have_attribute("data-weight", "90")
        expect(row).to_contain_text("aliases: dashboard-alias")
        shot(page, "06-routes")
    finally:
        server.http.delete("/api/routes/dashboard-demo")


def test_usage_and_spend_show_a_table_or_say_they_are_unavailable(page: Page) -> None:
    sign_in(page)
    go(page, "Usage & spend")
    for group in ("team", "endpoint"):
        box = page.locator(f"#usage-{group}")
        expect(box.locator("table, [data-unavailable], .empty")).to_have_count(1)
        expect(box.locator(".error")).to_have_count(0)
    shot(page, "07-usage")
