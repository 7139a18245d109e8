"""The operator console as a person uses it: a real headless Chromium, driven by
selenium, against a running worker with the mock partners.

Needs `chromium` and `chromedriver` (`make test` installs Debian's packages where they
are missing: devtools/browser.sh); without them these tests FAIL, saying so.

With CS_RELAY_CONSOLE_SCREENSHOTS=DIR set, the pages are saved as DIR/*.png along the
way (docs/console.md shows those of docs/console/).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.pipeline import Pipeline

pytestmark = pytest.mark.e2e

TOKEN = "console-e2e-token-0123456789abcdef"
SCRIPT_TRAIT = "<script>window.__owned = 1</script><b>bold?</b>"
WAIT = 30.0  # seconds for anything the worker does


def _find_browser() -> tuple[str, str]:
    chromium = os.environ.get("CHROMIUM") or next(
        (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    driver = (
        os.environ.get("CHROMEDRIVER")
        or shutil.which("chromedriver")
        or ("/usr/lib/chromium/chromedriver" if os.path.exists("/usr/lib/chromium/chromedriver") else None)
    )
    if not chromium or not driver:
        pytest.fail(
            "the console's browser tests need chromium and chromedriver: run devtools/browser.sh (make test "
            "does), or apt-get install chromium chromium-driver, or set CHROMIUM and CHROMEDRIVER",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[dev]'", pytrace=False)
    chromium, driver_path = _find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The browser on one worker's console; every method blocks (run it in a thread:
    the mock partners answer on the test's event loop)."""

    def __init__(self, driver: Any, base: str) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.base, self.By, self.Wait = driver, base, By, WebDriverWait
        # A page replaced while it is read (a form's redirect landing) is read again.
        self.stale = StaleElementReferenceException
        self.shots = os.environ.get("CS_RELAY_CONSOLE_SCREENSHOTS")

    def shot(self, name: str) -> None:
        if self.shots:
            Path(self.shots).mkdir(parents=True, exist_ok=True)
            self.d.save_screenshot(str(Path(self.shots) / f"{name}.png"))

    def text(self) -> str:
        return self.d.find_element(self.By.TAG_NAME, "body").text

    def until(self, condition: Callable[[Any], Any], what: str, *, refresh: bool = False) -> Any:
        def check(driver: Any) -> Any:
            if refresh:
                driver.refresh()
            return condition(driver)

        try:
            return self.Wait(self.d, WAIT, poll_frequency=0.3, ignored_exceptions=(self.stale,)).until(check)
        except Exception as exc:
            raise AssertionError(f"timed out waiting for {what}; the page says:\n{self.text()[:3000]}") from exc

    def rows(self, css: str) -> list[str]:
        return [r.text for r in self.d.find_elements(self.By.CSS_SELECTOR, f"{css} tbody tr")]

    def log_in(self) -> None:
        self.d.get(self.base + "/console")
        assert "Log in" in self.text() and "token=" not in self.d.current_url
        self.shot("login")
        field = self.d.find_element(self.By.ID, "token")
        field.send_keys(TOKEN)
        field.submit()
        self.until(lambda d: d.find_elements(self.By.ID, "q"), "the search form after logging in")
        assert TOKEN not in self.d.current_url
        cookie = self.d.get_cookie("cs_relay_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]

    def search(self, q: str) -> None:
        self.d.get(self.base + "/console")
        box = self.d.find_element(self.By.ID, "q")
        box.send_keys(q)
        box.submit()


async def _ready(pipeline: Pipeline, port: int) -> None:
    async def probe() -> int:
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/ready") as response:
                    return response.status
        except aiohttp.ClientError:
            return 0

    await pipeline.eventually(probe, lambda status: status == 200, timeout=60, what="the worker to be ready")


def _sent_with(requests: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The requests naming `text` (ClientSuccess puts the event name in the path, the others in the body)."""
    return [r for r in requests if text in r["path"] or text in json.dumps(r.get("json"), ensure_ascii=False)]


async def test_an_operator_finds_held_events_sees_them_delivered_and_replays_a_dead_letter_twice(
    pipeline: Pipeline, browser
):
    run = uuid.uuid4().hex[:6]
    user, group, account = f"ada-{run}", f"acme-{run}", f"acct-{run}"
    worker = pipeline.start_worker(CS_RELAY_ADMIN_TOKEN=TOKEN)
    console = Console(browser, f"http://127.0.0.1:{worker.web_port}")
    await _ready(pipeline, worker.web_port)
    await asyncio.to_thread(console.log_in)

    # A user whose track waits for their group call: held for ClientSuccess (no group)
    # and CustomerSuccessBox (no account).
    await pipeline.send(
        {
            "type": "identify",
            "userId": user,
            "messageId": f"id-{run}",
            "traits": {"name": SCRIPT_TRAIT, "email": f"{user}@example.com"},
        },
        {"type": "track", "userId": user, "event": f"Signed Up {run}", "messageId": f"su-{run}"},
    )

    def held() -> None:
        console.search(user)
        console.until(
            lambda d: any("held" in r and f"su-{run}" in r for r in console.rows("table.pending")),
            "the track held on the user page",
            refresh=True,
        )
        held_for = {r.split(" held ")[0] for r in console.rows("table.pending")}
        assert {"ClientSuccess", "CustomerSuccessBox"} <= held_for, held_for
        # The trait is shown as text, inert: no script ran, no element was made of it.
        traits = " ".join(console.rows("table.traits"))
        assert SCRIPT_TRAIT in traits
        assert browser.execute_script("return window.__owned === undefined")
        assert len(browser.find_elements(console.By.TAG_NAME, "script")) == 1  # console.js only
        assert not browser.find_elements(console.By.CSS_SELECTOR, "table.traits b")
        console.shot("user-held")

    await asyncio.to_thread(held)

    await pipeline.send(
        {
            "type": "group",
            "userId": user,
            "groupId": group,
            "messageId": f"g-{run}",
            "traits": {"name": f"Acme {run}", "account_id": account, "plan": "gold"},
        }
    )

    def delivered() -> None:
        def done(_: Any) -> bool:
            rows = console.rows("table.deliveries")
            return (not console.rows("table.pending") or "No events waiting" in console.text()) and sum(
                f"su-{run}" in r and "delivered" in r for r in rows
            ) >= 2

        console.until(done, "the held track delivered to ClientSuccess and CustomerSuccessBox", refresh=True)
        assert "No events waiting" in console.text()
        console.shot("user-delivered")
        browser.find_element(console.By.LINK_TEXT, group).click()
        console.until(lambda d: user in " ".join(console.rows("table.members")), "the user listed in the group page")
        assert "gold" in console.text()
        console.shot("group")
        console.search(account)  # CustomerSuccessBox's account id finds the group and the user
        console.until(lambda d: console.rows("table.matches"), "the account search")
        assert group in console.text() and user in console.text()

    await asyncio.to_thread(delivered)

    # A refusal: ClientSuccess answers 422 once; the track is dead-lettered for it.
    await pipeline.fault("cs", status=422, count=1)
    bought = f"Bought {run}"
    await pipeline.send({"type": "track", "userId": user, "event": bought, "messageId": f"b-{run}"})
    await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 1, timeout=WAIT, what="the dead letter")

    def replay(first: bool) -> None:
        browser.get(console.base + "/console/dead-letters?reason=partner_refused")
        console.until(
            lambda d: any(f"b-{run}" in r for r in console.rows("table.dead-letters")),
            "the dead letter listed (read from the dead-letter topic)",
            refresh=True,
        )
        [row] = console.rows("table.dead-letters")
        assert "partner_refused" in row and "clientsuccess" in row and "422" in row
        assert ("replayed" in row) is not first, row
        if first:
            console.shot("dead-letters")
        browser.find_element(console.By.CSS_SELECTOR, "table.dead-letters tbody input[type=checkbox]").click()
        browser.find_element(console.By.CSS_SELECTOR, "button[value=selected]").click()
        console.until(lambda d: d.find_elements(console.By.ID, "confirm-replay"), "the confirmation page")
        assert "Replay these 1 dead letter(s)" in console.text()
        assert ("already replayed from this console" in console.text()) is not first
        if first:
            console.shot("confirm-replay")
        browser.find_element(console.By.ID, "confirm-replay").click()
        console.until(lambda d: "Replayed 1 dead letter(s)" in console.text(), "the replay notice")

    await asyncio.to_thread(replay, True)
    await pipeline.eventually(
        lambda: pipeline.requests("clientsuccess"),
        lambda rs: any(r["status"] == 200 for r in _sent_with(rs, bought)),
        timeout=WAIT,
        what="the replayed track at ClientSuccess",
    )

    # The same dead letter replayed again from the console: the worker drops it as a
    # duplicate (it names the dead letter, as the CLI's replay does). A later track of
    # the same user (same partitions, so routed after it) shows it had its turn.
    await asyncio.to_thread(replay, False)
    after = f"After {run}"
    await pipeline.send({"type": "track", "userId": user, "event": after, "messageId": f"a-{run}"})
    cs = await pipeline.eventually(
        lambda: pipeline.requests("clientsuccess"),
        lambda rs: any(r["status"] == 200 for r in _sent_with(rs, after)),
        timeout=WAIT,
        what="the later track at ClientSuccess",
    )
    assert [r["status"] for r in _sent_with(cs, bought)] == [422, 200]  # refused, then delivered once
    for other in ("customersuccessbox", "webhook"):  # replayed to the refusing destination only
        assert len([r for r in _sent_with(await pipeline.requests(other), bought) if r["status"] < 300]) == 1, other

    def seen_delivered() -> None:
        browser.get(console.base + "/console/users/" + user)
        rows = console.rows("table.deliveries")
        assert sum(f"b-{run}" in r and "ClientSuccess" in r and "delivered" in r for r in rows) == 1, rows
        browser.get(console.base + "/console/destinations")
        console.until(lambda d: d.find_elements(console.By.CSS_SELECTOR, "svg polyline.delivered"), "the rate chart")
        assert "ClientSuccess" in " ".join(console.rows("table.destinations"))
        console.shot("destinations")
        browser.get(console.base + "/console/dead-letters")
        assert "replayed" in " ".join(console.rows("table.dead-letters")) and "(2×)" in console.text()

    await asyncio.to_thread(seen_delivered)


async def test_an_operator_tries_a_message_and_nothing_is_sent(pipeline: Pipeline, browser):
    """ "Try a message", reached from the navigation: a group call pasted for a user whose
    track is held shows, per destination, the held track released and the requests
    (credentials masked), decided against the user's state in the worker; the script in
    a trait stays text; nothing reaches a partner and the track is still held."""
    run = uuid.uuid4().hex[:6]
    user = f"bea-{run}"
    worker = pipeline.start_worker(CS_RELAY_ADMIN_TOKEN=TOKEN)
    console = Console(browser, f"http://127.0.0.1:{worker.web_port}")
    await _ready(pipeline, worker.web_port)
    await pipeline.send({"type": "track", "userId": user, "event": f"Signed Up {run}", "messageId": f"su-{run}"})

    async def pending() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.get(f"{console.base}/pending/{user}", headers=headers) as response:
                return response.status, await response.json()

    def held(answer: tuple[int, Any]) -> bool:
        queues = answer[1].get("queues", {}) if answer[0] == 200 else {}
        return all(queues.get(d, {}).get("held") for d in ("clientsuccess", "customersuccessbox"))

    before = await pipeline.eventually(pending, held, timeout=WAIT, what="the track held for both partners")
    sent_before = {d: len(await pipeline.requests(d)) for d in ("clientsuccess", "customersuccessbox", "webhook")}
    group = {
        "type": "group",
        "userId": user,
        "groupId": f"acme-{run}",
        "messageId": f"g-{run}",
        "traits": {"name": SCRIPT_TRAIT, "account_id": f"acct-{run}"},
    }

    def try_it() -> None:
        console.log_in()
        console.d.find_element(console.By.LINK_TEXT, "Try a message").click()
        box = console.until(lambda d: d.find_elements(console.By.ID, "messages"), "the Try a message form")[0]
        box.send_keys(json.dumps(group))
        console.d.find_element(console.By.ID, "try-preview").click()
        console.until(lambda d: "Preview only" in console.text(), "the preview")
        text = console.text()
        assert "Preview only: nothing was sent and nothing was written. 1 of 1 message(s) would be delivered" in text
        rows = console.rows("table.preview")
        released = [r for r in rows if f"releases held event 'su-{run}'" in r]
        assert {r.split(" ")[0] for r in released} == {"ClientSuccess", "CustomerSuccessBox"}, rows
        assert "api_key=***" in text and "Authorization: ***" in text
        assert SCRIPT_TRAIT in text  # shown as text, inert
        assert browser.execute_script("return window.__owned === undefined")
        assert len(browser.find_elements(console.By.TAG_NAME, "script")) == 1  # console.js only
        console.shot("try-message")

    await asyncio.to_thread(try_it)
    assert await pending() == before
    for destination, count in sent_before.items():
        assert len(await pipeline.requests(destination)) == count, destination
