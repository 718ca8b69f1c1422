"""Every API endpoint, called over real HTTP as each role and as anonymous, against the table of who
may do what (issue 11's done-when; docs/roles.md is the same table for readers).

A real `app.py serve` in accounts mode, with an admin, an annotator and a reviewer who are members
of project P, and an annotator who is a member of nothing (the outsider). Each endpoint listed at
/gradio_api/info is called through /gradio_api/call/<name> with the session cookie of a login:

1. with no project (each call in a fresh Gradio session, so only the permission checks decide):
   a refusal must be the handler's own ("log in first", "your role ... may not ...");
2. on project P, in a session the role's own page has set up (the page load and every tab opened),
   as the browser would call it; a refusal is the handler's or Gradio's (a project the caller's
   page never offered is not among the dropdown's choices).

Every refusal leaves the database as it was, and no answer to a non-admin carries data of a
project they do not work on or another annotator's figures. An endpoint missing from the table
fails the test.
"""
from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from annotation.auth.accounts import add_user
from annotation.services import labelling
from annotation.services.projects import ProjectSettings, create_project
from storage import accounts
from storage.db import open_database, reading, transaction
from storage.models import Base, PairwiseLabel, User
from tests.browser_support import ServerProcess
from tests.browser_support import call_endpoint as call
from tests.factories import make_items

PASSWORD = "correct horse battery"
P, Q = "team-p", "hidden-q"
ROLES = ("admin", "annotator", "reviewer", "outsider")
LOGINS = {"admin": "ada", "annotator": "ann", "reviewer": "rev", "outsider": "out"}

EVERYONE = frozenset(ROLES)
MEMBERS = frozenset({"admin", "annotator", "reviewer"})  # of P (admins work on every project)
ADMIN = frozenset({"admin"})
REVIEWERS = frozenset({"admin", "reviewer"})  # of P

# endpoint -> (who may call it with no project, who may call it on P); None: it takes no project.
TABLE: dict[str, tuple[frozenset, frozenset | None]] = {
    # The page and the Annotate tab: every role labels, on the projects they are members of
    "page_load": (EVERYONE, MEMBERS),
    "remember_name": (EVERYONE, None),
    "annotate_opened": (EVERYONE, MEMBERS),
    "annotate_pick_project": (EVERYONE, MEMBERS),
    "annotate_name_entered": (EVERYONE, MEMBERS),
    "annotate_name_left": (EVERYONE, MEMBERS),
    "annotate_choice_fields": (EVERYONE, None),
    "annotate_wait_for_items": (EVERYONE, MEMBERS),
    "annotate_progress": (EVERYONE, MEMBERS),
    "submit_pairwise": (EVERYONE, MEMBERS),
    "submit_list": (EVERYONE, MEMBERS),
    "skip_item": (EVERYONE, MEMBERS),
    "undo_last": (EVERYONE, MEMBERS),
    # Projects tab: admins
    "projects_opened": (ADMIN, ADMIN),
    "project_settings": (ADMIN, ADMIN),
    "create_project": (ADMIN, None),
    "save_project": (ADMIN, None),
    "add_prompts": (ADMIN, ADMIN),
    "import_file": (ADMIN, ADMIN),
    "judge_existing": (ADMIN, ADMIN),
    "judge_progress": (ADMIN, ADMIN),
    "judge_summary": (ADMIN, ADMIN),
    # Data tab: one's own figures on one's projects; every project's and exports for admins
    "data_opened": (EVERYONE, ADMIN),  # the picker on P is the export's: admins only
    "refresh_counts": (EVERYONE, None),
    "export_labels": (ADMIN, ADMIN),
    # Train tab: admins
    "train_opened": (ADMIN, ADMIN),
    "train_method": (ADMIN, None),
    "train_adapter_base_bon": (ADMIN, None),
    "train_adapter_base_eval": (ADMIN, None),
    "train_init_adapter_base_ppo": (ADMIN, None),
    "train_init_adapter_base_grpo": (ADMIN, None),
    "launch_job": (ADMIN, None),
    "job_poll": (ADMIN, None),
    "job_picked": (ADMIN, None),
    "cancel_job": (ADMIN, None),
    "resume_job": (ADMIN, None),
    "job_output": (ADMIN, None),
    # Models tab: admins
    "models_opened": (ADMIN, None),
    "refresh_models": (ADMIN, None),
    "model_lineage": (ADMIN, None),
    "try_model": (ADMIN, None),
    # Best-of-N tab: admins; a verdict is a label, but its project is picked in the admins' tab
    "bon_opened": (ADMIN, ADMIN),
    "best_of_n": (ADMIN, ADMIN),
    "rm_verdict": (EVERYONE, ADMIN),
    # Compare tab: side by side for admins; the arena and its leaderboard for the project's members
    "compare_opened": (EVERYONE, None),
    "compare_draw": (ADMIN, ADMIN),
    "compare_starting": (ADMIN, None),
    "compare_side_by_side": (ADMIN, None),
    "arena_draw": (EVERYONE, MEMBERS),
    "arena_starting": (EVERYONE, None),
    "arena_new_match": (EVERYONE, MEMBERS),
    "arena_vote_a": (EVERYONE, MEMBERS),
    "arena_vote_b": (EVERYONE, MEMBERS),
    "arena_vote_tie": (EVERYONE, MEMBERS),
    "arena_vote_both_bad": (EVERYONE, MEMBERS),
    "leaderboard_refresh": (ADMIN, MEMBERS),  # with no project: every project's votes
    "leaderboard_project": (ADMIN, MEMBERS),
    # Review tab: reviewers of the project
    "review_opened": (REVIEWERS, REVIEWERS),
    "review_project": (REVIEWERS, REVIEWERS),
    "review_filter": (REVIEWERS, REVIEWERS),
    "review_refresh": (REVIEWERS, REVIEWERS),
    "review_pick": (REVIEWERS, REVIEWERS),
    "review_accept": (REVIEWERS, REVIEWERS),
    "review_reject": (REVIEWERS, REVIEWERS),
    "review_correct": (REVIEWERS, REVIEWERS),
    # Team tab: admins
    "team_opened": (ADMIN, ADMIN),
    "team_project": (ADMIN, ADMIN),
    "team_refresh": (ADMIN, ADMIN),
    "mark_gold": (ADMIN, ADMIN),
    "unmark_gold": (ADMIN, ADMIN),
    "create_user": (ADMIN, None),
    "set_user_role": (ADMIN, None),
    "set_user_password": (ADMIN, None),
    "add_member": (ADMIN, ADMIN),
    "remove_member": (ADMIN, ADMIN),
}

# What the page calls first in a session: the load, then each tab opened (refused ones included).
WARM_UP = ["page_load", "annotate_opened", "data_opened", "projects_opened", "train_opened", "models_opened",
           "bon_opened", "compare_opened", "review_opened", "team_opened"]
# The dropdowns that hold a project, by parameter name.
PROJECT_PARAMS = {"project", "name", "current", "board_project"}
TYPED_NAME = "mallory"  # the name a client sends: never the annotator with accounts
OUR_REFUSAL = re.compile(r"^(log in first|your role \(\w+\) may not [a-z ,']+|"
                         r"you are not a member of project '[^']*': ask an admin to add you)$")
CHOICE_REFUSAL = re.compile(r"is not in the list of choices")
SECRETS = {"P-SECRET", "Q-SECRET", Q, "someone-else", "SOMEONE-ELSE-RATIONALE"}
# What each role may see in an answer (the rest of SECRETS must never appear).
# A reviewer of P sees its labels, with their annotators and rationales.
MAY_SEE = {"admin": SECRETS, "annotator": {"P-SECRET"},
           "reviewer": {"P-SECRET", "someone-else", "SOMEONE-ELSE-RATIONALE"}, "outsider": set()}


# ------------------------------------------------------------------------------------------------
# The server and its clients
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """`app.py serve` in accounts mode on a database with P (members: ann, rev), Q (no members) and
    a label on P by someone-else, who has no account."""
    folder = tmp_path_factory.mktemp("roles")
    path = folder / "roles.db"
    db = open_database(path)
    for name, secret in ((P, "P-SECRET"), (Q, "Q-SECRET")):
        create_project(db, ProjectSettings(name=name, model="test-model", guidelines=f"{secret} guidelines"))
        make_items(db, name, 6)
    view = labelling.next_item(db, P, "someone-else")
    labelling.submit_pairwise(db, view, "a", rationale="SOMEONE-ELSE-RATIONALE")
    add_user(db, "ada", "admin", PASSWORD)
    add_user(db, "ann", "annotator", PASSWORD, projects=(P,))
    add_user(db, "rev", "reviewer", PASSWORD, projects=(P,))
    add_user(db, "out", "annotator", PASSWORD)
    server = ServerProcess(["--db", str(path), "--no-worker", "--no-seed"], folder / "server.log", ready_path="login")
    url = server.url.rstrip("/")
    clients = {}
    try:
        for role, login in LOGINS.items():
            clients[role] = httpx.Client(base_url=url, timeout=60)
            answer = clients[role].post("/login", data={"name": login, "password": PASSWORD})
            assert answer.status_code == 303, answer.text
        clients["anonymous"] = httpx.Client(base_url=url, timeout=60)
        yield db, clients, server
    finally:
        for client in clients.values():
            client.close()
        server.stop()


def endpoints(client: httpx.Client) -> dict[str, list[dict]]:
    info = client.get("/gradio_api/info")
    assert info.status_code == 200, info.text
    return {name.lstrip("/"): ep["parameters"] for name, ep in info.json()["named_endpoints"].items()}


def arguments(parameters: list[dict], project: str | None) -> list:
    """Plausible values, as the page would send them: a project in its pickers (or each picker's own
    default), a typed name that is not the caller's, and each field's example otherwise."""
    values = []
    for p in parameters:
        component, name = p["component"], p["parameter_name"]
        if component == "Dropdown" and name in PROJECT_PARAMS and project is not None:
            values.append(project)
        elif p.get("parameter_has_default"):
            values.append(p["parameter_default"])
        elif component in ("Textbox", "Browserstate"):
            values.append(TYPED_NAME)
        elif component in ("Number", "Radio", "Checkbox"):
            values.append(p.get("example_input"))
        else:  # a dropdown with no project to give, a file: nothing picked
            values.append(None)
    return values


def by_name(parameters: list[dict], **values) -> list:
    """The endpoint's arguments in order, by parameter name (None for those not given)."""
    assert set(values) <= {p["parameter_name"] for p in parameters}, values
    return [values.get(p["parameter_name"]) for p in parameters]


def snapshot(db) -> list:
    """Every table's row count and the rows a refused call could change in place."""
    from storage.models import Job, Project

    with reading(db) as s:
        counts = [(t.name, s.scalar(select(func.count()).select_from(t))) for t in Base.metadata.sorted_tables]
        rows = [tuple(getattr(r, c.name) for c in r.__table__.columns if c.name != "updated_at")
                for model in (Project, Job, User) for r in s.scalars(select(model))]
    return counts + rows


def leaked(role: str, outcome) -> set[str]:
    text = json.dumps(outcome[1])
    return {secret for secret in SECRETS - MAY_SEE[role] if secret in text}


# ------------------------------------------------------------------------------------------------
# The table, endpoint by endpoint
# ------------------------------------------------------------------------------------------------

def test_every_endpoint_is_in_the_table(team):
    _, clients, _ = team
    listed = set(endpoints(clients["admin"]))
    assert listed - set(TABLE) == set(), "new endpoints: add them to TABLE (and docs/roles.md)"
    assert set(TABLE) - listed == set(), "endpoints gone: remove them from TABLE (and docs/roles.md)"


def test_anonymous_callers_get_nothing(team):
    db, clients, _ = team
    anonymous = clients["anonymous"]
    before = snapshot(db)
    for name, parameters in endpoints(clients["admin"]).items():
        for project in (None, P):
            outcome = call(anonymous, name, arguments(parameters, project))
            assert outcome[0] == "http 401", (name, outcome)
    for path in ("/gradio_api/info", "/config", "/gradio_api/queue/status"):
        assert anonymous.get(path).status_code == 401, path
    page = anonymous.get("/", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/login"), page.status_code
    assert snapshot(db) == before


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_what_the_table_says(team, role):
    db, clients, _ = team
    client, listed = clients[role], endpoints(clients["admin"])
    wrong = []

    def expect(name: str, allowed: bool, outcome, before, only_ours: bool) -> None:
        kind, payload = outcome
        if allowed and kind != "complete":
            wrong.append(f"{name}: allowed, got {kind} {payload!r}"[:300])
        elif not allowed:
            refused = kind == "error" and isinstance(payload, str) and (
                OUR_REFUSAL.match(payload) or (not only_ours and CHOICE_REFUSAL.search(payload)))
            if not refused:
                wrong.append(f"{name}: should be refused, got {kind} {payload!r}"[:300])
            if snapshot(db) != before:
                wrong.append(f"{name}: refused, but the database changed")
        if kind == "complete" and leaked(role, outcome):
            wrong.append(f"{name}: {role} was shown {sorted(leaked(role, outcome))}")

    # 1. No project, each call in a fresh session: only the permission checks decide.
    for name, (no_project, _) in TABLE.items():
        before = snapshot(db)
        expect(name, role in no_project, call(client, name, arguments(listed[name], None)), before, only_ours=True)

    # 2. On P, in a session the role's own page has set up.
    session = f"{role}-{uuid.uuid4().hex[:8]}"
    for name in WARM_UP:
        call(client, name, arguments(listed[name], None), session)
    for name, (_, on_project) in TABLE.items():
        if on_project is None:
            continue
        before = snapshot(db)
        outcome = call(client, name, arguments(listed[name], P), session)
        expect(f"{name} on P", role in on_project, outcome, before, only_ours=False)
    assert wrong == [], "\n".join(wrong)


# ------------------------------------------------------------------------------------------------
# The annotator is the login, and membership is checked on every call
# ------------------------------------------------------------------------------------------------

def labels_by(db, project: str) -> list[tuple[str, str | None]]:
    from storage.models import Item, Project

    with reading(db) as s:
        return list(s.execute(select(User.name, PairwiseLabel.rationale).join(PairwiseLabel.user)
                              .join(Item, PairwiseLabel.item_id == Item.id).join(Project)
                              .where(Project.name == project).order_by(PairwiseLabel.id)).all())


def test_a_label_is_the_logins_and_undo_takes_back_only_ones_own(team):
    db, clients, _ = team
    client, listed = clients["annotator"], endpoints(clients["admin"])
    session = f"labels-{uuid.uuid4().hex[:8]}"
    # The page opens on ann's first project, P, with an item for ann (the name sent is not ann's).
    kind, outputs = call(client, "page_load", by_name(listed["page_load"], typed="someone-else"), session)
    assert kind == "complete" and "Item " in json.dumps(outputs), outputs
    item = re.search(r"Item (\d+)\.", json.dumps(outputs)).group(1)
    before = labels_by(db, P)
    time.sleep(0.5)  # a label comes some time after its item was shown (serve --min-label-seconds)
    # The client says it is someone-else; the label is ann's.
    kind, outputs = call(client, "submit_pairwise", by_name(listed["submit_pairwise"], project=P, user="someone-else",
                                                            shown_item=item, choice="b", rationale="by ann"), session)
    assert kind == "complete" and "saved" in json.dumps(outputs), outputs
    assert labels_by(db, P) == [*before, ("ann", "by ann")]
    # Undo as "someone-else": ann's own last label goes, someone-else's stays.
    undo = by_name(listed["undo_last"], project=P, user="someone-else")
    kind, outputs = call(client, "undo_last", undo, session)
    assert kind == "complete" and "removed" in json.dumps(outputs), outputs
    assert labels_by(db, P) == before and ("someone-else", "SOMEONE-ELSE-RATIONALE") in before
    kind, outputs = call(client, "undo_last", undo, session)
    assert "Nothing to undo" in json.dumps(outputs) and labels_by(db, P) == before
    with reading(db) as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.name == TYPED_NAME)) == 0


def test_a_member_removed_from_the_project_is_refused_at_the_next_call(team):
    db, clients, _ = team
    client, listed = clients["reviewer"], endpoints(clients["admin"])
    session = f"removed-{uuid.uuid4().hex[:8]}"
    for name in WARM_UP:
        call(client, name, arguments(listed[name], None), session)
    assert call(client, "annotate_progress", by_name(listed["annotate_progress"], project=P), session)[0] == "complete"
    with transaction(db) as s:
        assert accounts.remove_member(s, "rev", P)
    try:
        before = snapshot(db)
        for name in ("annotate_pick_project", "annotate_name_entered", "annotate_name_left", "annotate_wait_for_items",
                     "annotate_progress", "submit_pairwise", "submit_list", "skip_item", "undo_last", "arena_draw",
                     "arena_new_match", "leaderboard_refresh", "leaderboard_project"):
            outcome = call(client, name, arguments(listed[name], P), session)
            assert outcome == ("error", f"you are not a member of project {P!r}: ask an admin to add you"), \
                (name, outcome)
        assert snapshot(db) == before
    finally:
        with transaction(db) as s:
            accounts.add_member(s, "rev", P)
