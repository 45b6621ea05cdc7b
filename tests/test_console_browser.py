"""The console in a real browser: Debian's Chromium driven by Selenium against a real gunicorn,
real `mediahook worker` processes and the vendor simulators, with a real Redis.

Skipped, saying so, only when no Chromium (or chromedriver, or Selenium) can be found; .ci/run
installs Chromium when it is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from app.sources.metastudio import signed_url
from tests.conftest import ROOM, vendor_sections
from tests.helpers import CDN_TOKEN, LIVE_EVENTS, MS_KEY, wait_until
from tests.vendor_harness import Workers, set_faults, stream_event, upload_body
from workers import actions

ALICE = "alice-browser-token-0123456789"
ADMIN = {"tokens": {"alice": ALICE}}
TIMEOUT = 40.0

pytestmark = pytest.mark.slow


def _find_chromium() -> tuple[str, str] | None:
    binary = next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))),
                  None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser tests skipped: Selenium is not installed (pip install -e '.[test]')")
    found = _find_chromium()
    if found is None:
        pytest.skip("browser tests skipped: no Chromium found (apt-get install chromium chromium-driver; "
                    ".ci/run does it when run as root)")
    binary, driver_path = found
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to see CSP violations and script errors
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


class Page:
    """The browser, with the few verbs these tests need; reads survive the page's own refreshes."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def _read(self, script: str, *args: Any) -> list[str]:
        """One script reads every match at once, so a page swapped in meanwhile (an auto-refresh,
        a navigation) cannot leave half-read, detached nodes; a read that meets one is tried again."""
        from selenium.common.exceptions import WebDriverException

        for _ in range(5):
            try:
                return self.driver.execute_script(script, *args)
            except WebDriverException:  # the document was replaced mid-read
                continue
        return []

    def texts(self, css: str) -> list[str]:
        return self._read("return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText.trim())", css)

    def attrs(self, css: str, name: str) -> list[str]:
        return self._read("return Array.from(document.querySelectorAll(arguments[0]),"
                          " e => e.getAttribute(arguments[1]))", css, name)

    def click(self, css: str) -> None:
        self.driver.find_element("css selector", css).click()

    def body(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def sign_in(self, token: str = ALICE) -> None:
        self.driver.find_element("id", "token").send_keys(token)
        self.click("#sign-in")

    def wait(self, cond: Callable[[], Any], what: str, reload: bool = False, timeout: float = TIMEOUT) -> Any:
        def check() -> Any:
            if reload:
                self.driver.refresh()
            return cond()

        return wait_until(check, timeout=timeout, interval=0.3, what=what)


@pytest.fixture
def stack(gunicorn_process, base_config, tmp_path, redis_client, browser):
    """Start gunicorn (console signed in) and one worker on the given simulator; yields a Page."""
    started = Workers(base_config, tmp_path)

    def start(sim_url: str) -> Page:
        sections = vendor_sections(sim_url)
        web = gunicorn_process(admin=ADMIN)  # the workers call the vendors: the web needs no sections
        started.start(redis_client, **sections)
        browser.delete_all_cookies()
        page = Page(browser, web.base)
        page.open("/console/")
        page.sign_in()
        page.wait(lambda: browser.current_url == web.base + "/console/", "the overview after signing in")
        return page

    yield start
    started.stop_all()


def post_signed(base: str, body: bytes) -> str:
    r = requests.post(signed_url(base + LIVE_EVENTS, MS_KEY), data=body, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["event_id"]


def status_of(redis, action_id: str) -> str | None:
    return (actions.record(redis, action_id) or {}).get("status")


# --- the tests ------------------------------------------------------------------------------------

def test_sign_in_see_a_callback_arrive_open_it_and_replay_it(gunicorn_process, sim, browser, redis_client,
                                                              base_config, tmp_path):
    sections = vendor_sections(sim.url)
    web = gunicorn_process(admin=ADMIN)
    workers = Workers(base_config, tmp_path)
    try:
        workers.start(redis_client, **sections)
        browser.delete_all_cookies()
        page = Page(browser, web.base)
        # Without a session: the login page, which then leads back where we were going.
        page.open("/console/events?tail=1")
        assert "/console/login?next=" in browser.current_url
        page.sign_in()
        page.wait(lambda: browser.current_url.endswith("/console/events?tail=1"), "the events page")

        event_id = post_signed(web.base, stream_event(ROOM, "CONNECTED", job_id="job-browser"))
        page.wait(lambda: event_id in page.attrs("#event-rows tr.event", "data-id"),
                  "the new callback to appear by live tail (no reload)")
        page.click(f'tr[data-id="{event_id}"] a.event-link')
        page.wait(lambda: page.texts("#event-id") == [event_id], "the event page")
        page.wait(lambda: (states := page.texts("#actions .action-status")) and all(
            s == "succeeded" for s in states), "its actions, done", reload=True)
        assert "video_settings.reconcile" in page.body() and "converter.reconcile" in page.body()
        assert "secret-stream-key" not in page.body()

        page.click("#replay")
        page.wait(lambda: "Replay queued as job" in " ".join(page.texts("#notice")), "the replay notice")
        assert redis_client.hget(f"mh:event:{event_id}", "replays") == b"1"
        page.open("/console/audit")
        assert "alice" in page.body() and "replay" in page.body() and event_id in page.body()

        # A POST without the CSRF token is refused, and nothing is done.
        page.open(f"/console/events/{event_id}")
        browser.execute_script("document.getElementById('replay').form.querySelector('[name=csrf_token]').remove();")
        page.click("#replay")
        page.wait(lambda: "CSRF token is missing or wrong" in page.body(), "the CSRF refusal")
        assert redis_client.hget(f"mh:event:{event_id}", "replays") == b"1"
        # No page broke its Content-Security-Policy or threw (the 403 just above is expected).
        problems = [e["message"] for e in browser.get_log("browser")
                    if e["level"] == "SEVERE" and "403" not in e["message"]]
        assert problems == []
    finally:
        workers.stop_all()


def test_a_failure_for_good_is_requeued_from_the_failed_page(stack, sim, redis_client):
    set_faults(sim.url, {"koophone": {"vendor_errors": [
        {"times": 1, "code": "KOOPHONE.API.1002", "message": "instances are not in the same region"}]}})
    page = stack(sim.url)
    event_id = post_signed(page.base, stream_event(ROOM, "CONNECTED", job_id="job-fail"))
    action_id = f"koophone-{event_id}-0-0"
    page.open("/console/failed")
    page.wait(lambda: action_id in page.attrs("tr.failed-item", "data-id"), "the failure on the Failed page",
              reload=True)
    assert "KOOPHONE.API.1002" in page.body() and "instances are not in the same region" in page.body()

    page.click(f'tr[data-id="{action_id}"] .requeue-one')
    page.wait(lambda: page.texts("h1") == ["Requeue 1 item?"], "the confirmation saying how many")
    page.click("#confirm")
    page.wait(lambda: "Requeued 1." in " ".join(page.texts("#notice")), "the requeue notice")
    wait_until(lambda: status_of(redis_client, action_id) == "succeeded", timeout=TIMEOUT,
               what="the requeued apply to succeed")
    page.open(f"/console/events/{event_id}")
    page.wait(lambda: page.texts("#actions .action-status") and all(
        s == "succeeded" for s in page.texts("#actions .action-status")), "every action succeeded", reload=True)


def test_a_live_streams_state_change_shows_without_a_reload(stack, sim):
    page = stack(sim.url)
    page.open("/console/streams")
    post_signed(page.base, stream_event("room-watch", "CONNECTED", job_id="job-watch"))

    def state() -> list[str]:
        return page.texts('tr.stream[data-room="room-watch"] .stream-state')

    page.wait(lambda: state() == ["CONNECTED"], "the stream, CONNECTED")
    post_signed(page.base, stream_event("room-watch", "RECONNECTING", job_id="job-watch"))
    page.wait(lambda: state() == ["RECONNECTING"], "the stream's new state, by auto-refresh")
    page.click('tr.stream[data-room="room-watch"] a')
    page.wait(lambda: [t.split()[0] for t in page.texts("#stream-history li")] == ["CONNECTED", "RECONNECTING"],
              "the state history")


@pytest.fixture
def slow_sim() -> Iterator[Any]:
    """Simulators whose transcodes take a few seconds, so progress can be watched."""
    from simulators import serve

    server = serve(config={"seed": 7, "muducloud": {"transcode_seconds": 5.0, "queue_seconds": 0.2},
                           "metastudio": {"callback_interval_s": 0.05}})
    yield server
    server.stop()


def test_transcode_progress_bars_move_to_done(stack, slow_sim):
    page = stack(slow_sim.url)
    page.open("/console/transcodes")
    r = requests.post(f"{page.base}/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}",
                      data=upload_body(("VIDBROWSER", 480)), timeout=5)
    assert r.status_code == 200
    rungs = '[data-video="VIDBROWSER"] tr.rung'
    page.wait(lambda: page.texts(f"{rungs} .rung-state") and any(
        0.0 < float(v or 0) < 1.0 for v in page.attrs(f"{rungs} progress", "value")), "a rung part done")
    page.wait(lambda: (states := page.texts(f"{rungs} .rung-state")) and all(s == "success" for s in states),
              "every rung done")
    assert len(page.texts(f"{rungs} .rung-state")) == 2  # 360 and 480: none above the source
    page.wait(lambda: all(float(v) == 1.0 for v in page.attrs(f"{rungs} progress", "value")), "full bars")


def test_a_refused_callbacks_reason_is_shown(stack, sim):
    page = stack(sim.url)
    page.open("/console/rejected")
    r = requests.post(f"{page.base}/hooks/cdnetworks/vod-upload?token=not-the-token-0", data=b"{}", timeout=5)
    assert r.status_code == 401
    page.wait(lambda: "wrong token" in page.texts("#rejected-items .reason"), "the refusal and its reason")
    assert "not-the-token-0" not in page.body()
    page.open("/console/")
    page.wait(lambda: "cdnetworks 401: wrong token" in page.body(), "the reason on the overview")
    # The overview's other figures, from the same Redis: the worker this test started, its queues.
    assert int(page.texts("#workers-alive")[0]) >= 1 and page.texts("#redis-state") == ["up"]
    assert "mediahook-events" in " ".join(page.texts("#queues td"))
