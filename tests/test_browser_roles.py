"""What each role sees in a real browser (accounts mode): an annotator logged in through the login
page sees Annotate, Data and Compare only, labels under their login (the name box shows it and
cannot be edited), and is offered only their projects; an admin sees every tab. The server refuses
what the page hides: tests/test_roles.py calls every endpoint over HTTP."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from annotation.auth.accounts import add_user
from annotation.services.projects import ProjectSettings, create_project
from storage.db import open_database, reading
from storage.models import PairwiseLabel, User
from tests.browser_support import ServerProcess, launch_browser, wait_idle, wait_item, wait_status
from tests.factories import make_items

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("roles-ui")
    db = open_database(folder / "ui.db")
    for name in ("mine", "theirs"):
        create_project(db, ProjectSettings(name=name, model="test-model", guidelines=f"guidelines of {name}"))
        make_items(db, name, 4)
    add_user(db, "ada", "admin", PASSWORD)
    add_user(db, "ann", "annotator", PASSWORD, projects=("mine",))
    proc = ServerProcess(["--db", str(folder / "ui.db"), "--no-worker", "--no-seed"], folder / "server.log",
                         ready_path="login")
    proc.db = db
    yield proc
    proc.stop()


def logged_in_page(browser, url: str, name: str):
    """A fresh browser context (a private window: no cookies but its own) logged in as ``name``."""
    page = browser.new_context().new_page()
    page.set_default_timeout(20_000)
    page.goto(url)
    page.locator("input[name=name]").fill(name)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("#log-in").click()
    page.wait_for_function("() => { const i = document.querySelector('#annotate-project input[role=combobox]');"
                           " return i && i.value !== ''; }")
    wait_idle(page)
    return page


def visible_tabs(page) -> list[str]:
    buttons = page.locator("#main-tabs button[role=tab]")
    return [buttons.nth(i).get_attribute("data-tab-id") for i in range(buttons.count()) if buttons.nth(i).is_visible()]


def options(page, elem_id: str) -> list[str]:
    option = page.locator(f"#{elem_id} [role=option]")
    option.first.wait_for()
    return [option.nth(i).get_attribute("aria-label") for i in range(option.count())]


def test_an_annotator_sees_their_part_and_labels_under_their_login(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        admin = logged_in_page(browser, server.url, "ada")
        every_tab = admin.locator("#main-tabs button[role=tab]").evaluate_all("bs => bs.map(b => b.dataset.tabId)")
        assert len(every_tab) >= 7 and visible_tabs(admin) == every_tab
        admin.screenshot(path=str(tmp_path / "admin.png"))

        page = logged_in_page(browser, server.url, "ann")
        assert visible_tabs(page) == ["annotate", "data", "compare"]
        # The annotator is the login: no name to type, and the page says who is signed in.
        expect(page.locator("#signed-in")).to_contain_text("Signed in as ann")
        expect(page.locator("#annotator textarea")).to_have_count(0)
        # Only the member project is offered.
        page.click("#annotate-project input[role=combobox]")
        assert options(page, "annotate-project") == ["mine"]
        page.keyboard.press("Escape")
        item = wait_item(page)
        expect(page.locator("#guidelines")).to_contain_text("guidelines of mine")
        page.locator("#choice input[type=radio]").first.click()
        page.click("#submit-pair")
        wait_status(page, rf"saved \(item {item}\)")
        with reading(server.db) as s:
            names = s.scalars(select(User.name).join(PairwiseLabel.user).where(PairwiseLabel.item_id == item)).all()
        assert names == ["ann"]
        # Compare: the arena is theirs, generating side by side is not.
        page.click("#main-tabs button[role=tab][data-tab-id='compare']")
        wait_idle(page)
        expect(page.locator("#arena-new")).to_be_visible()
        expect(page.locator("#side-by-side")).to_be_hidden()
        expect(page.locator("#cmp-run")).to_be_hidden()
        page.click("#arena-project input[role=combobox]")
        assert options(page, "arena-project") == ["mine"]
        page.keyboard.press("Escape")
        page.screenshot(path=str(tmp_path / "annotator.png"), full_page=True)
        browser.close()
