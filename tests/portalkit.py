"""Helpers for the tests that drive the operator portal in a real browser (Debian's
chromium through Selenium): the running stack's handles, and waits that survive the
portal re-rendering its views on every push."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

T = TypeVar("T")
ADMIN, OPERATOR, VIEWER = "portal-admin-token-01", "portal-operator-token-1", "portal-viewer-token-01"
ROLES = {ADMIN: "admin", OPERATOR: "operator", VIEWER: "viewer"}
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("SERVE_ML_TEST_ARTIFACTS", "test-artifacts")) / "portal"


class Stack:
    """A running `serve-ml up`: its environment, URL, database, bundle root and log."""

    def __init__(self, env: dict[str, str], url: str, dsn: str, root: Path, log: Path) -> None:
        self.env, self.url, self.dsn, self.root, self.log = env, url, dsn, root, log
        self.api = httpx.Client(base_url=f"{url}/api/v1/serve-ml", timeout=30)

    def db(self, sql: str, *args: object) -> list[dict]:
        async def run() -> list[dict]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return [dict(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()
        return asyncio.run(run())


def wait(d: WebDriver, timeout_s: float, poll_frequency: float = 0.5) -> WebDriverWait:
    """A wait that retries when the element it read was re-rendered in between: the
    portal rebuilds its views on every push, so any read can meet a stale element."""
    return WebDriverWait(d, timeout_s, poll_frequency=poll_frequency,
                         ignored_exceptions=[StaleElementReferenceException])


def read(d: WebDriver, what: Callable[[WebDriver], T]) -> T:
    """``what(d)``, retried (up to 5 s) while the element it reads is re-rendered."""
    return wait(d, 5).until(lambda d: (what(d),))[0]


def sign_in(d: WebDriver, stack: Stack, token: str, page: str = "fleet") -> None:
    """As a user would: type the token into the header's field and press Use; return
    once the page is rendered for that token's role (the previous token's page may
    still be on screen until then)."""
    d.get_log("browser")  # the previous test's entries (a poll of its page may end after it did)
    d.get(f"{stack.url}/#/{page}")
    field = wait(d, 10).until(lambda d: d.find_element(By.ID, "token"))
    field.clear()
    field.send_keys(token)
    d.find_element(By.CSS_SELECTOR, "#login button").click()
    role, name = ROLES[token], page.split("/")[0]
    wait(d, 10).until(lambda d: d.find_element(By.ID, "role").text == f"signed in as {role}")
    wait(d, 30).until(lambda d: [d.find_element(By.ID, "view").get_attribute(a) for a in ("data-role", "data-page")]
                      == [role, name])


def console_errors(d: WebDriver) -> list[dict]:
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def shoot(d: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def charted_sensors(d: WebDriver) -> set[str]:
    """The raw sensors the equipment page charts with at least one point."""
    return {c.get_attribute("data-sensor") for c in d.find_elements(By.CSS_SELECTOR, "#eq-sensor-charts canvas")
            if int(c.get_attribute("data-points") or 0) > 0}


# The latest verdict as shown, or null until one with (arguments[0]) or without class
# probabilities has arrived.
READ_VERDICT = """
const probs = [...document.querySelectorAll('#eq-probabilities li')].map((li) => [li.dataset.class, li.textContent]);
const fault = document.getElementById('eq-fault'), rul = document.getElementById('eq-rul');
const classified = document.getElementById('eq-classified');
const wantProbs = arguments.length ? arguments[0] : true;
if (!fault || (wantProbs && !probs.length) || (!wantProbs && rul.textContent === '—')) return null;
return {probabilities: probs, fault: fault.textContent, rul: rul.textContent,
        classified: classified ? classified.dataset.label : null};
"""


def choose_state(d: WebDriver) -> bool:
    Select(d.find_element(By.ID, "a-state")).select_by_value("active_unack")
    time.sleep(0.3)
    return d.find_element(By.ID, "a-state").get_attribute("value") == "active_unack"


def first_unacked(d: WebDriver) -> int | None:
    """The newest unacknowledged alarm on a machine, once the filtered list is shown."""
    rows = [[td.text for td in r.find_elements(By.TAG_NAME, "td")] + [r.get_attribute("data-alarm")]
            for r in d.find_elements(By.CSS_SELECTOR, "#alarms tr[data-alarm]")]
    if not rows or {r[4] for r in rows} != {"active_unack"}:  # the filtered list has not arrived yet
        return None
    return next((int(r[-1]) for r in rows if r[1] != "serve-ml"), None)
