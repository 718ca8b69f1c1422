"""Accounts as a team meets them: the `users` CLI in a subprocess, then `app.py serve` in accounts
mode over real HTTP (login, logout, rate limit, every route refused to anonymous callers) and in
Chromium (an admin and an annotator in separate private contexts, the annotator labels)."""
from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import select
from starlette.routing import Mount

from annotation.auth.accounts import UserRow, user_rows
from annotation.auth.passwords import verify_password
from annotation.auth.sessions import COOKIE
from annotation.auth.web import OPEN_PATHS, build_web_app
from annotation.ui.app import build_app, launch_kwargs
from annotation.ui.context import UIContext
from storage import accounts
from storage.db import open_database, reading
from storage.models import LoginSession, PairwiseLabel, User
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, ROOT, ServerProcess, require_chromium, wait_item, wait_status
from tests.browser_support import users_cli as users
from tests.factories import make_items, make_project

ADMIN_PASSWORD = "admin password 1"
ANN_PASSWORD = "annotator password 1"


def test_users_cli_adds_lists_changes_passwords_and_memberships(tmp_path):
    path = tmp_path / "cli.db"
    db = open_database(path)
    make_project(db, "p")
    first = users(path, "list")
    assert first.returncode == 0 and "users add NAME --role admin" in first.stdout

    added = users(path, "add", "ada", "--role", "admin", password=ADMIN_PASSWORD)
    assert added.returncode == 0 and "added admin 'ada'" in added.stdout, added.stderr
    assert users(path, "add", "ann", "--role", "annotator", "--project", "p", password=ANN_PASSWORD).returncode == 0
    before = user_rows(db)
    assert before == [UserRow("ada", "admin", True, ()), UserRow("ann", "annotator", True, ("p",))]
    for args, password, message in [
        (["add", "ada", "--role", "annotator"], ANN_PASSWORD, "a user named 'ada' already exists"),
        (["add", "bob", "--role", "boss"], ANN_PASSWORD, "unknown role 'boss': use one of admin, annotator, reviewer"),
        (["add", "bob", "--role", "annotator"], "", "the password is empty"),
        (["add", "bob", "--role", "annotator", "--project", "nope"], ANN_PASSWORD, "no project named 'nope'"),
        (["passwd", "nobody"], ANN_PASSWORD, "no user named 'nobody'"),
        (["passwd", "ann"], "", "the password is empty"),
    ]:
        refused = users(path, *args, password=password)
        assert refused.returncode == 2 and refused.stderr.startswith(f"error: {message}"), refused.stderr
    assert user_rows(db) == before  # nothing written by any refusal

    listed = users(path, "list").stdout.splitlines()
    assert [line.split() for line in listed] == [["name", "role", "login", "projects"], ["ada", "admin", "yes", "-"],
                                                 ["ann", "annotator", "yes", "p"]]
    assert users(path, "passwd", "ann", password="a brand new one").returncode == 0
    with reading(db) as s:
        stored = accounts.find_user(s, "ann").password_hash
    assert verify_password(stored, "a brand new one") and not verify_password(stored, ANN_PASSWORD)
    assert "'ada' is now a member of 'p'" in users(path, "member", "ada", "p").stdout
    assert "'ann' left 'p'" in users(path, "member", "ann", "p", "--remove").stdout
    assert "'ann' is now reviewer" in users(path, "role", "ann", "reviewer").stdout
    assert user_rows(db) == [UserRow("ada", "admin", True, ("p",)), UserRow("ann", "reviewer", True, ())]


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A server in accounts mode: admin ada, annotator ann (member of p), and 'locked' for the rate limit."""
    folder = tmp_path_factory.mktemp("team")
    path = folder / "team.db"
    db = open_database(path)
    make_project(db, "p")
    make_items(db, "p", 6)
    for name, role, password in [("ada", "admin", ADMIN_PASSWORD), ("ann", "annotator", ANN_PASSWORD),
                                 ("locked", "annotator", ANN_PASSWORD)]:
        assert users(path, "add", name, "--role", role, "--project", "p", password=password).returncode == 0
    server = ServerProcess(["--db", str(path), "--no-worker", "--no-seed"], folder / "server.log", ready_path="login")
    server.db, server.path = db, path
    yield server
    server.stop()


def log_in(url: str, name: str, password: str) -> httpx.Response:
    return httpx.post(url + "login", data={"name": name, "password": password, "next": "/"})


def every_route(db) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route the server registers, Gradio's included, path
    parameters filled in: built in-process with the same code `serve` runs."""
    app = build_web_app(db, build_app(UIContext(db=db)).queue(), **launch_kwargs())

    def walk(routes, prefix=""):
        for route in routes:
            if isinstance(route, Mount):
                yield from walk(route.routes, prefix + route.path)
            elif hasattr(route, "original_router"):  # a router FastAPI included (Gradio's /gradio_api)
                yield from walk(route.original_router.routes, prefix)
            else:
                for method in route.methods:
                    yield method, re.sub(r"\{[^}]+\}", "x", prefix + route.path)

    return sorted(set(walk(app.routes)))


def test_anonymous_callers_get_nothing_from_any_route(team):
    routes = every_route(team.db)
    assert len(routes) > 60 and ("POST", "/gradio_api/queue/join") in routes and ("GET", "/gradio_api/info") in routes
    allowed = []
    for method, path in routes:
        if path in OPEN_PATHS:
            continue
        answer = httpx.request(method, team.url.rstrip("/") + path, headers={"Accept": "application/json"})
        if answer.status_code != 401:
            allowed.append(f"{method} {path}: {answer.status_code}")
    assert allowed == []
    # What an attacker would try first, with real bodies.
    base = team.url.rstrip("/")
    queue = httpx.post(f"{base}/gradio_api/queue/join", json={"data": ["p", "ann", None], "fn_index": 0,
                                                              "session_hash": "attacker", "event_data": None})
    assert queue.status_code == 401 and "log in" in queue.json()["error"]
    assert httpx.get(f"{base}/gradio_api/file={team.path}").status_code == 401
    assert httpx.get(f"{base}/gradio_api/info").status_code == 401
    assert httpx.get(f"{base}/no/such/route").status_code == 401  # nothing to probe, not even a 404
    page = httpx.get(team.url, headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/"
    with reading(team.db) as s:
        assert s.scalars(select(PairwiseLabel)).all() == []


def test_login_sets_a_first_party_session_cookie_and_logout_ends_it_on_the_server(team):
    for name, password in [("ann", "wrong password"), ("nobody", ANN_PASSWORD)]:
        refused = log_in(team.url, name, password)
        assert refused.status_code == 401 and "Wrong name or password." in refused.text and COOKIE not in refused.cookies

    answer = log_in(team.url, "ann", ANN_PASSWORD)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    header = answer.headers["set-cookie"]
    assert re.search(r"; HttpOnly", header) and "SameSite=lax" in header and "Path=/" in header
    assert "Domain" not in header  # first-party: the cookie belongs to this host only
    token = answer.cookies[COOKIE]
    with reading(team.db) as s:  # the server stores the token's hash, never the token
        stored = s.scalars(select(LoginSession.token_hash)).all()
        assert token not in stored and len(stored) == 1
    cookies = {COOKIE: token}
    assert httpx.get(team.url + "gradio_api/user", cookies=cookies).json() == "ann"  # what handlers see
    assert httpx.get(team.url + "gradio_api/info", cookies=cookies).status_code == 200
    assert httpx.get(team.url, cookies=cookies, headers={"Accept": "text/html"}).status_code == 200

    out = httpx.get(team.url + "logout", cookies=cookies)
    assert out.status_code == 303 and out.headers["location"] == "/login?out=1"
    assert httpx.get(team.url + "gradio_api/info", cookies=cookies).status_code == 401  # the old cookie is dead
    with reading(team.db) as s:
        assert s.scalars(select(LoginSession)).all() == []


def test_a_session_outlives_the_server_process(team, tmp_path):
    """Sessions live in the database, not in the process: a second server on the same database (as
    after a restart) takes the first one's cookie."""
    token = log_in(team.url, "ada", ADMIN_PASSWORD).cookies[COOKIE]
    again = ServerProcess(["--db", str(team.path), "--no-worker", "--no-seed"], tmp_path / "again.log",
                          ready_path="login")
    try:
        assert httpx.get(again.url + "gradio_api/user", cookies={COOKIE: token}).json() == "ada"
        assert httpx.get(again.url + "gradio_api/user").status_code == 401
    finally:
        again.stop()


def test_failed_logins_are_rate_limited_per_name(team):
    for _ in range(5):
        assert log_in(team.url, "locked", "not the password").status_code == 401
    limited = log_in(team.url, "locked", ANN_PASSWORD)  # even the right password, while limited
    assert limited.status_code == 429
    assert re.search(r"Too many failed logins: wait \d+ seconds and try again\.", limited.text)
    assert log_in(team.url, "ada", ADMIN_PASSWORD).status_code == 303  # another name is not held up


def test_local_mode_refuses_a_non_loopback_host_and_says_how_to_leave_it(tmp_path):
    refused = subprocess.run([sys.executable, "app.py", "serve", "--db", str(tmp_path / "solo.db"), "--host",
                              "0.0.0.0", "--no-worker"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "refusing to serve on 0.0.0.0: no accounts exist" in refused.stderr
    assert "python app.py users add NAME --role admin" in refused.stderr
    server = ServerProcess(["--db", str(tmp_path / "solo.db"), "--no-worker"], tmp_path / "solo.log")
    try:
        assert ("no accounts: single-user local mode on 127.0.0.1; create the first admin with "
                "`python app.py users add NAME --role admin`") in server.log()
        assert httpx.get(server.url + "gradio_api/info").status_code == 200  # nobody logs in locally
        assert httpx.get(server.url + "login").headers["location"] == "/"
    finally:
        server.stop()


@pytest.mark.browser
def test_an_admin_and_an_annotator_log_in_in_private_contexts_and_the_annotator_labels(team):
    from playwright.sync_api import expect, sync_playwright

    require_chromium()
    with sync_playwright() as p:
        # Third-party cookies blocked, as in a private window: the session cookie is first-party.
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=[*CHROMIUM_ARGS, "--test-third-party-cookie-phaseout"])

        def sign_in(name: str, password: str):
            context = browser.new_context()  # fresh: no cookie shared with any other context
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(team.url)
            expect(page).to_have_url(re.compile(r"/login\?next=/$"))
            page.screenshot(path=str(team.log_path.parent / "login.png"))
            page.fill("#name", name)
            page.fill("#password", password)
            page.click("#log-in")
            expect(page.locator("#signed-in")).to_contain_text(f"Signed in as {name} · Log out")
            return context, page

        admin_context, admin = sign_in("ada", ADMIN_PASSWORD)
        annotator_context, page = sign_in("ann", ANN_PASSWORD)
        expect(page.locator("#annotator")).to_be_hidden()  # no typed name: the session says who
        item_id = wait_item(page)
        page.locator("#choice label").filter(has_text="A is better").click()
        page.click("#submit-pair")
        wait_status(page, f"saved \\(item {item_id}\\)")
        with reading(team.db) as s:
            label = s.scalar(select(PairwiseLabel).where(PairwiseLabel.item_id == item_id))
            assert s.get(User, label.user_id).name == "ann"
        page.screenshot(path=str(team.log_path.parent / "annotator.png"), full_page=True)

        token = next(c["value"] for c in annotator_context.cookies() if c["name"] == COOKIE)
        page.click("#log-out")
        expect(page.locator("#login-note")).to_have_text("You are logged out.")
        page.goto(team.url)
        expect(page).to_have_url(re.compile(r"/login\?next=/$"))
        assert httpx.get(team.url + "gradio_api/info", cookies={COOKIE: token}).status_code == 401
        admin.reload()  # the admin's session, in its own context, is untouched
        expect(admin.locator("#signed-in")).to_contain_text("Signed in as ada")
        admin_context.close()
        annotator_context.close()
        browser.close()
