"""The Team tab (admins): who works on what, how much and how well, and the gold items.

Users with their roles and projects, and the forms that manage them (annotation.ui.team_users);
per annotator of the picked project: labels, median time per label, skip rate, agreement with the
other annotators' majority, accuracy on gold items and review outcomes; the project's
Krippendorff's alpha and, where they apply, Cohen's and Fleiss' kappa, each with a bootstrap
interval, and the agreement of every pair of annotators. Gold items are marked here with their
known answer. Every handler checks the caller's permission on the server.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from annotation.auth.accounts import user_rows
from annotation.services import gold
from annotation.services.agreement import AgreementReport
from annotation.services.team import team_report
from annotation.ui.access import Permission, caller
from annotation.ui.context import UIContext
from annotation.ui.team_users import UserForms, build_user_forms, wire_user_forms
from storage.errors import InputError

USER_COLUMNS = ["user", "role", "can log in", "projects"]
ANNOTATOR_COLUMNS = ["annotator", "labels", "median s/label", "skip rate", "with majority", "gold accuracy",
                     "accepted", "corrected", "rejected", "not reviewed"]
GOLD_COLUMNS = ["item", "prompt", "answer"]
GOLD_HELP = ("In the item's own response order: pairwise a (first response), b, tie or both_bad; listwise a rank "
             "per response (1 = best); pointwise a score 1-5 per response")


@dataclass
class TeamTab:
    project: gr.Dropdown
    refresh: gr.Button
    users: gr.Dataframe
    accounts: UserForms
    annotators: gr.Dataframe
    agreement: gr.HTML
    gold_item: gr.Textbox
    gold_answer: gr.Textbox
    mark: gr.Button
    unmark: gr.Button
    gold_table: gr.Dataframe
    status: gr.Markdown

    def views(self) -> list:
        return [self.users, *self.accounts.pickers(), self.annotators, self.agreement, self.gold_table, self.status]


def _share(value: float | None, units: int | None = None) -> str:
    if value is None:
        return "–"
    return f"{value:.0%}" + (f" ({units})" if units is not None else "")


def agreement_html(report: AgreementReport) -> str:
    """The project's agreement figures with their intervals, and the table of annotator pairs."""
    figures = [("Krippendorff's alpha", report.alpha), ("Cohen's kappa", report.cohen),
               ("Fleiss' kappa", report.fleiss)]
    items = "".join(f'<li data-figure="{html.escape(name)}"><b>{html.escape(name)}</b>: {html.escape(str(value))}</li>'
                    for name, value in figures if value is not None)
    pairs = "".join(f"<tr><td>{html.escape(p.first)} &amp; {html.escape(p.second)}</td><td>{p.shared}</td>"
                    f"<td>{_share(p.agreement)}</td></tr>" for p in report.pairs)
    table = (f'<table class="ps-pairs"><tr><th>annotators</th><th>shared units</th><th>agreement</th></tr>{pairs}'
             "</table>") if pairs else "<p>No two annotators labelled the same unit yet.</p>"
    return (f'<div id="team-agreement-figures"><p>{report.level} data: {report.units} units labelled by two or more '
            f"of {report.raters} annotators; 95% bootstrap intervals over units.</p><ul>{items}</ul>{table}</div>")


def team_views(ctx: UIContext, tab: TeamTab, request: gr.Request, typed_name: str | None, project: str | None,
               message: str = "") -> dict:
    caller(ctx, request, Permission.view_team_stats, typed_name=typed_name)
    try:
        rows = user_rows(ctx.db)
        users = {tab.users: [[u.name, u.role, "yes" if u.can_log_in else "no", ", ".join(u.projects)] for u in rows],
                 **tab.accounts.choices(ctx, [u.name for u in rows])}
        if not project:
            return {**users, tab.annotators: [], tab.agreement: "", tab.gold_table: [],
                    tab.status: message or "Pick a project."}
        report = team_report(ctx.db, project)
        golds = [[g.item_id, g.prompt[:100], ", ".join(f"{k}: {v}" for k, v in g.answer.items())]
                 for g in gold.gold_items(ctx.db, project)]
    except InputError as exc:
        return {tab.users: [], tab.annotators: [], tab.agreement: "", tab.gold_table: [], tab.status: f"⚠️ {exc}"}
    rows = [[a.annotator, a.labels, "–" if a.median_seconds is None else f"{a.median_seconds:.1f}",
             f"{a.skip_rate:.0%}", _share(a.with_majority, a.majority_units), _share(a.gold_accuracy, a.gold_units),
             a.reviews.get("accepted", 0), a.reviews.get("corrected", 0), a.reviews.get("rejected", 0),
             a.reviews.get("submitted", 0)] for a in report.annotators]
    return {**users, tab.annotators: rows, tab.agreement: agreement_html(report.agreement),
            tab.gold_table: golds, tab.status: message}


def build_team_tab(ctx: UIContext, annotator: gr.Textbox) -> TeamTab:
    with gr.Row():
        project = gr.Dropdown(label="Project", choices=[], allow_custom_value=True, elem_id="team-project")
        refresh = gr.Button("Refresh", elem_id="team-refresh")
    users = gr.Dataframe(headers=USER_COLUMNS, value=[], interactive=False, elem_id="team-users", label="Users")
    accounts = build_user_forms()
    annotators = gr.Dataframe(headers=ANNOTATOR_COLUMNS, value=[], interactive=False, elem_id="team-annotators",
                              label="Annotators (with majority / gold accuracy: share of units, units in brackets)")
    agreement = gr.HTML("", elem_id="team-agreement")
    gr.Markdown("### Gold items (known answers, mixed into every annotator's queue)")
    with gr.Row():
        gold_item = gr.Textbox(label="Item id", elem_id="gold-item")
        gold_answer = gr.Textbox(label="Known answer", info=GOLD_HELP, elem_id="gold-answer")
    with gr.Row():
        mark = gr.Button("Mark as gold", elem_id="gold-mark")
        unmark = gr.Button("Remove gold", elem_id="gold-unmark")
    gold_table = gr.Dataframe(headers=GOLD_COLUMNS, value=[], interactive=False, elem_id="gold-items")
    status = gr.Markdown("", elem_id="team-status")
    tab = TeamTab(project, refresh, users, accounts, annotators, agreement, gold_item, gold_answer, mark, unmark,
                  gold_table, status)

    def show(typed_name, name, request: gr.Request):
        return team_views(ctx, tab, request, typed_name, name)

    for event, api_name in ((project.change, "team_project"), (refresh.click, "team_refresh")):
        event(show, [annotator, project], tab.views(), show_progress="hidden", api_name=api_name)

    def set_gold(remove: bool):
        def handler(typed_name, name, item_id, answer, request: gr.Request):
            caller(ctx, request, Permission.manage_projects, typed_name=typed_name)
            try:
                if not name:
                    raise InputError("pick a project first")
                if remove:
                    gold.unmark_gold(ctx.db, name, item_id)
                    done = f"✅ Item {item_id} is no longer a gold item."
                else:
                    stored = gold.mark_gold(ctx.db, name, item_id, answer)
                    done = f"✅ Item {item_id} is a gold item ({', '.join(f'{k}: {v}' for k, v in stored.items())})."
            except InputError as exc:
                return {status: f"⚠️ {exc}"}
            return team_views(ctx, tab, request, typed_name, name, done)
        handler.__name__ = "unmark_gold" if remove else "mark_gold"
        return handler

    wire_user_forms(ctx, accounts, annotator, project, tab.views(),
                    lambda request, typed_name, name: team_views(ctx, tab, request, typed_name, name))

    mark.click(set_gold(False), [annotator, project, gold_item, gold_answer], tab.views(), api_name="mark_gold")
    unmark.click(set_gold(True), [annotator, project, gold_item, gold_answer], tab.views(), api_name="unmark_gold")
    return tab

