"""Headless Chromium for the page tests: one browser per session, one context per user."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from gateway_node import GatewayNode
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from devstack import Stack

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "screenshots"
# Generous for a 2-core machine running the whole stack, still far below the test timeout.
expect.set_options(timeout=20_000)

NewPage = Callable[[str], Awaitable[Page]]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's outcome on the item, so fixtures know whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def chromium_path() -> str:
    """Debian's Chromium; Playwright's own browser download cannot work on this network."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Chromium is not installed: run scripts/bootstrap.sh (it installs Debian's chromium)",
            pytrace=False,
        )
    return path


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium shared by the session."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # Background services would only knock on the closed network and slow the start.
            args=["--disable-gpu", "--disable-quic", "--disable-background-networking"],
            timeout=60_000,
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Iterator[Path]:
    """This test's screenshot folder (git-ignored), emptied first."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield folder


@pytest_asyncio.fixture
async def new_page(
    browser: Browser, request: pytest.FixtureRequest, screenshots: Path
) -> AsyncIterator[NewPage]:
    """Opens a page in a fresh context (its own storage, as another person's browser)."""
    contexts: list[BrowserContext] = []
    pages: list[Page] = []
    errors: list[str] = []

    async def open_page(url: str) -> Page:
        context = await browser.new_context(viewport={"width": 1100, "height": 720})
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{url}: {exc}"))
        pages.append(page)
        await page.goto(url)
        return page

    try:
        yield open_page
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            for index, page in enumerate(pages):
                if page.is_closed():
                    continue
                await page.screenshot(path=screenshots / f"failure-{index}.png", full_page=True)
    finally:
        for context in contexts:
            await context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture
def short_replay_node(
    full_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayNode]:
    """A gateway node that replays at most 2 room events per join: more missed is a gap."""
    log = tmp_path_factory.mktemp("short-replay") / "gateway.log"
    node = GatewayNode(full_stack, {"CHAT_MAX_REPLAY_MESSAGES": "2"}, log)
    node.start()
    try:
        yield node
    finally:
        node.stop()
