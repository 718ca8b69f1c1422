"""A team set up in the page (issue 11's done-when): the first admin is made with the CLI, as the
README says; in Chromium the admin logs in, is refused bad input in the Team tab, creates annotator
"ann" and makes them a member of project P. "ann" logs in in a fresh private context (no cookie
shared, third-party cookies blocked), labels an item of P under their login, is shown no admin tab,
and their session cookie is refused by the admin endpoints when called directly, nothing changed.
The admin then sets ann a new password (ann's session ends), changes ann's role and membership,
and cannot demote themselves, the last admin."""
from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from annotation.auth.accounts import UserRow, user_rows
from annotation.auth.sessions import COOKIE
from annotation.services.projects import ProjectSettings, create_project
from storage.db import open_database, reading
from storage.models import Base, PairwiseLabel, User
from tests.browser_support import (
    ServerProcess,
    call_endpoint,
    goto_tab,
    launch_browser,
    pick_dropdown,
    sign_in,
    users_cli,
    wait_idle,
    wait_item,
    wait_status,
)
from tests.factories import make_items
from tests.test_browser_data import table_rows

pytestmark = pytest.mark.browser

ADMIN_PASSWORD = "admin password 1"
ANN_PASSWORD = "first password of ann"
ANN_NEW_PASSWORD = "second password of ann"
P = "P"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("team-admin")
    path = folder / "team.db"
    db = open_database(path)
    create_project(db, ProjectSettings(name=P, model="test-model", guidelines="guidelines of P"))
    make_items(db, P, 4)
    created = users_cli(path, "add", "ada", "--role", "admin", password=ADMIN_PASSWORD)
    assert created.returncode == 0, created.stderr
    proc = ServerProcess(["--db", str(path), "--no-worker", "--no-seed"], folder / "server.log", ready_path="login")
    proc.db = db
    yield proc
    proc.stop()


def fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} input, #{elem_id} textarea").first.fill(text)


def users_status(page, pattern: str) -> None:
    wait_status(page, pattern, elem_id="users-status")
    wait_idle(page)


def create_user(page, name: str, role: str, password: str, again: str) -> None:
    fill(page, "new-user-name", name)
    pick_dropdown(page, "new-user-role", role)
    fill(page, "new-user-password", password)
    fill(page, "new-user-again", again)
    page.click("#create-user")


def users_table(page) -> dict[tuple[str, str], list[str]]:
    return table_rows(page.locator("#team-users"))


def everything(db) -> list:
    """Every table's row count, and each user's name, role and password hash."""
    with reading(db) as s:
        counts = [(t.name, s.scalar(select(func.count()).select_from(t))) for t in Base.metadata.sorted_tables]
        return counts + [tuple(row) for row in s.execute(select(User.name, User.role, User.password_hash))]


def visible_tabs(page) -> list[str]:
    buttons = page.locator("#main-tabs button[role=tab]")
    return [buttons.nth(i).get_attribute("data-tab-id") for i in range(buttons.count()) if buttons.nth(i).is_visible()]


def test_admin_creates_an_annotator_who_labels_in_a_private_context_and_cannot_reach_admin_actions(server, tmp_path):
    from playwright.sync_api import sync_playwright

    db = server.db
    with sync_playwright() as p:
        browser = launch_browser(p, block_third_party_cookies=True)
        admin = sign_in(browser, server.url, "ada", ADMIN_PASSWORD)
        goto_tab(admin, "team")
        expect(admin.locator("#team-users")).to_contain_text("ada")

        # Bad input: a clear message beside the forms, nothing written, the password fields emptied.
        before = everything(db)
        for name, password, again, message in [
            ("ann", ANN_PASSWORD, ANN_PASSWORD + "x", "the two passwords differ; nothing was changed"),
            ("ann", "short", "short", "the password is shorter than 8 characters"),
            ("ada", ANN_PASSWORD, ANN_PASSWORD, "a user named 'ada' already exists"),
            ("  ", ANN_PASSWORD, ANN_PASSWORD, "the user name is empty"),
        ]:
            create_user(admin, name, "annotator", password, again)
            users_status(admin, re.escape(f"⚠️ {message}"))
            assert admin.locator("#new-user-password input").input_value() == ""
            assert admin.locator("#new-user-again input").input_value() == ""
        assert everything(db) == before

        # ann, created and made a member of P in the page.
        create_user(admin, "ann", "annotator", ANN_PASSWORD, ANN_PASSWORD)
        users_status(admin, re.escape("✅ Added annotator 'ann': they can log in now."))
        assert admin.locator("#new-user-name textarea, #new-user-name input").first.input_value() == ""
        assert users_table(admin)[("ann", "annotator")] == ["yes", ""]
        pick_dropdown(admin, "user-pick", "ann")
        pick_dropdown(admin, "member-project", P)
        admin.click("#add-member")
        users_status(admin, re.escape(f"✅ 'ann' is now a member of '{P}'."))
        assert users_table(admin)[("ann", "annotator")] == ["yes", P]
        # The last admin cannot step down.
        pick_dropdown(admin, "user-pick", "ada")
        pick_dropdown(admin, "user-role", "annotator")
        admin.click("#set-role")
        users_status(admin, re.escape("⚠️ 'ada' is the last admin: make another user an admin first"))
        assert user_rows(db) == [UserRow("ada", "admin", True, ()), UserRow("ann", "annotator", True, (P,))]
        # The password typed never comes back: not in a field, not in the page, not in the server's log.
        for elem_id in ("new-user-password", "new-user-again", "user-password", "user-again"):
            assert admin.locator(f"#{elem_id} input").get_attribute("type") == "password"
            assert admin.locator(f"#{elem_id} input").input_value() == ""
        assert ANN_PASSWORD not in admin.content()
        admin.locator("#team-users").scroll_into_view_if_needed()
        admin.screenshot(path=str(tmp_path / "team-users.png"), full_page=True)

        # ann, in a fresh private context, labels an item of P under their login.
        ann = sign_in(browser, server.url, "ann", ANN_PASSWORD)
        item = wait_item(ann)
        expect(ann.locator("#guidelines")).to_contain_text("guidelines of P")
        ann.locator("#choice label").filter(has_text="A is better").click()
        ann.click("#submit-pair")
        wait_status(ann, rf"saved \(item {item}\)")
        with reading(db) as s:
            assert s.scalars(select(User.name).join(PairwiseLabel.user).where(PairwiseLabel.item_id == item)).all() \
                == ["ann"]
        # No admin tab, no user forms.
        assert visible_tabs(ann) == ["annotate", "data", "compare"]
        for elem_id in ("create-user", "set-role", "set-password", "add-member", "team-users"):
            expect(ann.locator(f"#{elem_id}")).to_be_hidden()
        ann.screenshot(path=str(tmp_path / "ann.png"), full_page=True)

        # The server refuses ann's cookie at the admin endpoints, called directly: nothing changes.
        token = next(c["value"] for c in ann.context.cookies() if c["name"] == COOKIE)
        before = everything(db)
        with httpx.Client(base_url=server.url.rstrip("/"), cookies={COOKIE: token}, timeout=60) as script:
            for endpoint, data, refusal in [
                ("create_user", ["", None, "mallory", "admin", ANN_PASSWORD, ANN_PASSWORD], "manage users"),
                ("set_user_role", ["", None, "ann", "admin"], "manage users"),
                ("set_user_password", ["", None, "ada", ANN_PASSWORD, ANN_PASSWORD], "manage users"),
                ("add_member", ["", None, "ann", P], "manage users"),
                ("team_refresh", ["", P], "see the team's statistics"),
                ("launch_job", None, "run or watch jobs"),
            ]:
                if data is None:  # every argument empty: the permission check comes first
                    info = script.get("/gradio_api/info").json()["named_endpoints"][f"/{endpoint}"]
                    data = [None] * len(info["parameters"])
                outcome = call_endpoint(script, endpoint, data)
                assert outcome == ("error", f"your role (annotator) may not {refusal}"), (endpoint, outcome)
        assert everything(db) == before

        # The admin sets ann a new password: ann's session ends at once; the new password logs in.
        pick_dropdown(admin, "user-pick", "ann")
        fill(admin, "user-password", ANN_NEW_PASSWORD)
        fill(admin, "user-again", ANN_NEW_PASSWORD)
        admin.click("#set-password")
        users_status(admin, re.escape("✅ New password set for 'ann'; their sessions were ended."))
        assert httpx.get(server.url + "gradio_api/info", cookies={COOKIE: token}).status_code == 401
        assert httpx.post(server.url + "login", data={"name": "ann", "password": ANN_PASSWORD}).status_code == 401
        assert httpx.post(server.url + "login", data={"name": "ann", "password": ANN_NEW_PASSWORD}).status_code == 303
        # A new role, and the membership ended.
        pick_dropdown(admin, "user-role", "reviewer")
        admin.click("#set-role")
        users_status(admin, re.escape("✅ 'ann' is now reviewer."))
        admin.click("#remove-member")
        users_status(admin, re.escape(f"✅ 'ann' left '{P}'."))
        assert users_table(admin)[("ann", "reviewer")] == ["yes", ""]
        assert user_rows(db) == [UserRow("ada", "admin", True, ()), UserRow("ann", "reviewer", True, ())]
        browser.close()
    log = server.log()
    assert ANN_PASSWORD not in log and ANN_NEW_PASSWORD not in log and ADMIN_PASSWORD not in log
