"""The web front in headless Chromium against the real API and PostgreSQL, on one origin.

The stack: the session's throwaway PostgreSQL (tests/conftest.py), `alembic upgrade head` through
the CLI, then `uvicorn app.api.main:app` with SOCIALNET_FRONT_DIR=app/front/static so the API
serves the front at `/` and the API under `/api`.
With SOCIALNET_FRONT_URL set, the tests drive that deployment instead (e.g. the local platform's
edge) and start nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.support.browser import (
    PageWatch,
    launch_chromium,
    require_chromium,
    screenshots_on_failure,
    watch_page,
)
from tests.support.postgres import PostgresServer
from tests.support.processes import running_process

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FRONT_DIR = REPO / "app" / "front" / "static"
PASSWORD = "correct horse battery"

expect.set_options(timeout=15_000)


# ------------------------------------------------------------------------------------------------
# The stack


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        time.sleep(0.2)
    raise RuntimeError(
        f"{url} not ready after {timeout_s:.0f} s ({last}):\n{log.read_text()[-4000:]}"
    )


@contextlib.contextmanager
def _api_serving_front(server: PostgresServer, database: str, workdir: Path) -> Iterator[str]:
    """Migrates ``database`` with the Alembic CLI, then runs the API (serving the front) on it."""
    env = {
        **os.environ,
        "SOCIALNET_DB_HOST": server.host,
        "SOCIALNET_DB_PORT": str(server.port),
        "SOCIALNET_DB_NAME": database,
        "SOCIALNET_DB_USER": server.superuser,
        "SOCIALNET_DB_PASSWORD": "",
        "SOCIALNET_TOKEN_SECRET": secrets.token_hex(32),
        "SOCIALNET_VERSION": "e2e",
        "SOCIALNET_FAULT_ERROR_RATE": "0",
        "SOCIALNET_FAULT_LATENCY_MS": "0",
        "SOCIALNET_FRONT_DIR": str(FRONT_DIR),
    }
    env.pop("SOCIALNET_DB_PASSWORD_FILE", None)
    migration = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "app/api/alembic.ini", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migration.returncode == 0, f"alembic upgrade head failed:\n{migration.stderr}"

    port = _free_port()
    log = workdir / "api.log"
    command = [
        sys.executable, "-m", "uvicorn", "app.api.main:app",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    with running_process(command, env, log, cwd=REPO, stop_timeout_s=10) as api:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/readyz", api, log, timeout_s=60)
        yield base


@pytest.fixture(scope="module")
def front_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Where the front and the API answer on one origin."""
    require_chromium()  # fail or skip before paying for a database
    external = os.environ.get("SOCIALNET_FRONT_URL")
    if external:
        yield external.rstrip("/")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database = "front_e2e"
    server.create_database(database)
    try:
        with _api_serving_front(server, database, tmp_path_factory.mktemp("front-api")) as base:
            yield base
    finally:
        server.drop_database(database)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as launched:
        yield launched


@pytest.fixture
def screenshot_dir(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Path:
    return tmp_path_factory.mktemp(f"screenshots-{request.node.name}")


# ------------------------------------------------------------------------------------------------
# A person in front of the UI


@dataclass
class Person:
    username: str
    context: BrowserContext
    page: Page
    watch: PageWatch

    def sign_up(self, display_name: str) -> None:
        page = self.page
        page.goto("/")
        expect(page.get_by_test_id("auth-view")).to_be_visible()
        page.get_by_test_id("tab-signup").click()
        page.get_by_test_id("signup-username").fill(self.username)
        page.get_by_test_id("signup-display-name").fill(display_name)
        page.get_by_test_id("signup-password").fill(PASSWORD)
        page.get_by_test_id("signup-submit").click()
        expect(page.get_by_test_id("timeline-view")).to_be_visible()
        expect(page.get_by_test_id("nav-me")).to_have_text(f"@{self.username}")

    def open_user(self, username: str) -> None:
        self.page.get_by_test_id("search-input").fill(username)
        self.page.get_by_test_id("search-submit").click()
        expect(self.page.get_by_test_id("profile-username")).to_have_text(f"@{username}")

    def post(self, text: str) -> None:
        # A timeline still loading when the post is added may list it twice (a known race of
        # the front on a slow machine): compose once it is ready.
        self.open_timeline()
        self.page.get_by_test_id("compose-text").fill(text)
        self.page.get_by_test_id("compose-submit").click()
        expect(self.post_card(text)).to_be_visible()
        expect(self.page.get_by_test_id("compose-text")).to_have_value("")

    def open_timeline(self) -> None:
        self.page.get_by_test_id("nav-timeline").click()
        expect(self.page.get_by_test_id("timeline-view")).to_be_visible()
        expect(self.page.get_by_test_id("timeline")).to_have_attribute("data-state", "ready")

    def post_card(self, text: str) -> Locator:
        cards = self.page.get_by_test_id("post").filter(
            has=self.page.get_by_test_id("post-text").get_by_text(text, exact=True)
        )
        return cards.first


@pytest.fixture
def people(browser: Browser, front_url: str) -> Iterator[dict[str, Person]]:
    """Two people, each in their own browser context (own localStorage), with unique names."""
    suffix = secrets.token_hex(3)
    crowd: dict[str, Person] = {}
    for role in ("alice", "bob"):
        context = browser.new_context(base_url=front_url, viewport={"width": 1100, "height": 900})
        page = context.new_page()
        crowd[role] = Person(f"{role}_{suffix}", context, page, watch_page(page, front_url))
    try:
        yield crowd
    finally:
        for person in crowd.values():
            person.context.close()


def on_failure_screenshots(
    people: dict[str, Person], directory: Path
) -> contextlib.AbstractContextManager[None]:
    return screenshots_on_failure({name: p.page for name, p in people.items()}, directory)


def assert_clean(*persons: Person) -> None:
    problems = [f"{p.username}: {issue}" for p in persons for issue in p.watch.problems()]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# Tests


def test_sign_up_follow_post_and_like_across_two_users(
    people: dict[str, Person], screenshot_dir: Path
) -> None:
    alice, bob = people["alice"], people["bob"]
    with on_failure_screenshots(people, screenshot_dir):
        alice.sign_up("Alice Liddell")
        expect(alice.page.get_by_test_id("feed-status")).to_contain_text("timeline is empty")

        # API errors reach the person: 409 for a taken username, 422 details for a short password.
        bob.page.goto("/#/signup")
        bob.page.get_by_test_id("signup-username").fill(alice.username)
        bob.page.get_by_test_id("signup-password").fill(PASSWORD)
        bob.page.get_by_test_id("signup-submit").click()
        expect(bob.page.get_by_test_id("form-error")).to_be_visible()
        expect(bob.page.get_by_test_id("auth-view")).to_be_visible()
        bob.page.get_by_test_id("signup-username").fill(bob.username)
        bob.page.get_by_test_id("signup-password").fill("short")
        bob.page.get_by_test_id("signup-submit").click()
        expect(bob.page.get_by_test_id("form-error")).to_contain_text(re.compile("password", re.I))

        bob.sign_up("Bob Builder")

        # Bob finds Alice and follows her.
        bob.open_user(alice.username)
        expect(bob.page.get_by_test_id("profile-name")).to_have_text("Alice Liddell")
        follow = bob.page.get_by_test_id("follow-button")
        expect(follow).to_have_text("Follow")
        follow.click()
        expect(follow).to_have_text("Unfollow")
        expect(bob.page.get_by_test_id("followers-count")).to_have_text("1")
        bob.page.reload()
        expect(bob.page.get_by_test_id("follow-button")).to_have_text("Unfollow")

        # Alice posts; the counter follows the text and refuses more than 500 characters.
        alice.page.get_by_test_id("compose-text").fill("x" * 501)
        expect(alice.page.get_by_test_id("compose-counter")).to_have_text("501 / 500")
        expect(alice.page.get_by_test_id("compose-submit")).to_be_disabled()
        text = f"Down the rabbit hole, café ✓ {secrets.token_hex(2)}"
        alice.post(text)
        expect(alice.page.get_by_test_id("compose-counter")).to_have_text("0 / 500")

        # Bob sees it in his timeline and likes it; the like survives a reload.
        bob.open_timeline()
        card = bob.post_card(text)
        expect(card).to_be_visible()
        expect(card.get_by_test_id("post-author")).to_have_text("Alice Liddell")
        like = card.get_by_test_id("like-button")
        expect(like).to_have_attribute("aria-pressed", "false")
        like.click()
        expect(like).to_have_attribute("aria-pressed", "true")
        expect(card.get_by_test_id("like-count")).to_have_text("1")
        bob.page.reload()
        card = bob.post_card(text)
        expect(card.get_by_test_id("like-button")).to_have_attribute("aria-pressed", "true")
        expect(card.get_by_test_id("like-count")).to_have_text("1")

        # Bob comments; Alice sees the like and the comment on her own post.
        card.get_by_test_id("comments-button").click()
        card.get_by_test_id("comment-input").fill("Curiouser and curiouser!")
        card.get_by_test_id("comment-submit").click()
        expect(card.get_by_test_id("comment-text")).to_have_text("Curiouser and curiouser!")
        expect(card.get_by_test_id("comment-count")).to_have_text("1")
        alice.page.get_by_test_id("timeline-refresh").click()
        own = alice.post_card(text)
        expect(own.get_by_test_id("like-count")).to_have_text("1")
        expect(own.get_by_test_id("comment-count")).to_have_text("1")
        expect(own.get_by_test_id("delete-button")).to_be_visible()
        expect(card.get_by_test_id("delete-button")).to_have_count(0)  # not Bob's post

        bob.page.screenshot(path=str(screenshot_dir / "bob-timeline.png"), full_page=True)
        assert_clean(alice, bob)


def test_user_content_is_rendered_as_text(people: dict[str, Person], screenshot_dir: Path) -> None:
    mallory, victim = people["alice"], people["bob"]
    with on_failure_screenshots(people, screenshot_dir):
        payload = '<img src=x onerror="window.__xss=1">'
        name_payload = "<script>window.__xss=2</script>"

        mallory.sign_up(name_payload)
        mallory.post(payload)
        card = mallory.post_card(payload)
        expect(card.get_by_test_id("post-text")).to_have_text(payload)
        expect(card.locator("img")).to_have_count(0)

        victim.sign_up("Victim")
        victim.open_user(mallory.username)
        expect(victim.page.get_by_test_id("profile-name")).to_have_text(name_payload)
        victim.page.get_by_test_id("follow-button").click()
        expect(victim.page.get_by_test_id("follow-button")).to_have_text("Unfollow")
        victim.open_timeline()
        card = victim.post_card(payload)
        expect(card.get_by_test_id("post-text")).to_have_text(payload)
        expect(card.get_by_test_id("post-author")).to_have_text(name_payload)
        expect(
            victim.page.locator("[data-testid=view] img, [data-testid=view] script")
        ).to_have_count(0)

        for person in (mallory, victim):
            assert person.page.evaluate("typeof window.__xss") == "undefined"
        victim.page.screenshot(path=str(screenshot_dir / "victim-timeline.png"), full_page=True)
        assert_clean(mallory, victim)


def test_own_post_deleted_and_timeline_paged(
    people: dict[str, Person], front_url: str, screenshot_dir: Path
) -> None:
    alice = people["alice"]
    with on_failure_screenshots(people, screenshot_dir):
        alice.sign_up("Alice Pager")

        # Delete takes two clicks: the first only arms the button.
        alice.post("A typo I regret")
        card = alice.post_card("A typo I regret")
        card.get_by_test_id("delete-button").click()
        expect(card.get_by_test_id("delete-button")).to_have_text("Delete?")
        card.get_by_test_id("delete-button").click()
        expect(alice.page.get_by_test_id("post")).to_have_count(0)

        # 25 posts made through the API with the UI's own token: 20 first, 5 behind "Load more".
        token = alice.page.evaluate("localStorage.getItem('socialnet.token')")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=front_url, headers=headers, timeout=10) as api:
            for number in range(1, 26):
                response = api.post("/api/posts", json={"text": f"post #{number}"})
                assert response.status_code == 201, response.text
        alice.page.get_by_test_id("timeline-refresh").click()
        posts = alice.page.get_by_test_id("post-text")
        expect(posts).to_have_count(20)
        expect(posts.first).to_have_text("post #25")
        more = alice.page.get_by_test_id("load-more")
        more.click()
        expect(posts).to_have_count(25)
        expect(posts.last).to_have_text("post #1")
        expect(more).to_be_hidden()

        # A token the API no longer accepts sends the person back to the log-in form.
        alice.page.evaluate("localStorage.setItem('socialnet.token', 'expired.or.forged')")
        alice.page.reload()
        expect(alice.page.get_by_test_id("auth-view")).to_be_visible()
        expect(alice.page.get_by_test_id("toast")).to_contain_text("session has ended")
        assert alice.page.evaluate("localStorage.getItem('socialnet.token')") is None
        assert_clean(alice)


@contextlib.contextmanager
def _front_server(workdir: Path) -> Iterator[str]:
    """`python -m app.front.server`, as the local platform runs it."""
    port = _free_port()
    log = workdir / "front.log"
    command = [sys.executable, "-m", "app.front.server", "--host", "127.0.0.1", "--port", str(port)]
    with running_process(command, None, log, cwd=REPO, stop_timeout_s=10) as front:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/healthz", front, log, timeout_s=30)
        yield base


def test_local_front_server_serves_the_app(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory, screenshot_dir: Path
) -> None:
    with _front_server(tmp_path_factory.mktemp("front-server")) as base:
        expected_types = {
            "/": "text/html",
            "/app.js": "text/javascript",
            "/styles.css": "text/css",
            "/favicon.svg": "image/svg+xml",
            "/healthz": "application/json",
        }
        for path, content_type in expected_types.items():
            response = httpx.get(base + path, timeout=5)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(content_type), path
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert "server" not in response.headers, path
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{base}/missing.js", timeout=5).status_code == 404

        # The page runs under the header CSP as well as its meta tag, and asks no other origin.
        context = browser.new_context(base_url=base)
        page = context.new_page()
        watch = watch_page(page, base)
        try:
            with screenshots_on_failure({"front": page}, screenshot_dir):
                page.goto("/")
                expect(page.get_by_test_id("auth-view")).to_be_visible()
                expect(page).to_have_url(re.compile(r"#/login$"))
                page.get_by_test_id("tab-signup").click()
                expect(page.get_by_test_id("signup-form")).to_be_visible()
                assert not watch.problems(), "\n".join(watch.problems())
        finally:
            context.close()
