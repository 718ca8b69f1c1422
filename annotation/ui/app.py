"""The Gradio app: tabs composed, keyboard shortcuts and styling. One module per tab beside this one."""
from __future__ import annotations

import html

import gradio as gr

from annotation.services import projects
from annotation.ui.access import Actor, Permission, caller, has, project_choices
from annotation.ui.annotate import build_annotate_tab, release_on_close
from annotation.ui.best_of_n import build_best_of_n_tab
from annotation.ui.best_of_n import refresh as best_of_n_choices
from annotation.ui.compare import build_compare_tab
from annotation.ui.compare import on_select as compare_choices
from annotation.ui.context import UIContext
from annotation.ui.data import build_data_tab, data_views
from annotation.ui.models import build_models_tab, show_models
from annotation.ui.projects import build_projects_tab
from annotation.ui.review import build_review_tab
from annotation.ui.team import build_team_tab
from annotation.ui.train import build_train_tab
from annotation.ui.train import on_select as train_choices

# Keys act only when focus is not in a text field, so typing a rationale never fires a shortcut; and
# after Enter in the name field focus moves to the item, so the next key labels instead of typing
# into the name. `?` shows the list of keys (kept in KEYS so the overlay and the handler agree).
KEYS = [("1 – 4", "pairwise: A is better / B is better / tie / both bad"),
        ("1 – 5", "ratings: rate the next unrated response"),
        ("Enter", "submit (also from a rank box)"), ("S", "skip"), ("U", "undo the last label"),
        ("?", "show or hide this list"), ("Esc", "close this list")]

SHORTCUTS_JS = """
<script>
(() => {
  if (window.__prefstudioKeys) return;
  window.__prefstudioKeys = true;
  const typing = (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName)
      && !(el.tagName === "INPUT" && ["radio", "checkbox", "button"].includes(el.type)));
  const visible = (el) => el && el.offsetParent !== null;
  const click = (sel) => { const el = document.querySelector(sel); if (visible(el)) { el.click(); return true; } return false; };
  const focusItem = () => {
    const item = document.querySelector("#prompt");
    if (document.activeElement) document.activeElement.blur();
    if (item) { item.tabIndex = -1; item.focus({preventScroll: true}); }
  };
  const help = () => {
    let box = document.getElementById("ps-help");
    if (!box) {
      box = document.createElement("div");
      box.id = "ps-help";
      box.setAttribute("role", "dialog");
      box.setAttribute("aria-label", "Keyboard shortcuts");
      box.innerHTML = "<h3>Keyboard shortcuts</h3><table>" + KEY_ROWS + "</table>";
      box.addEventListener("click", () => { box.hidden = true; });
      document.body.appendChild(box);
      box.hidden = true;
    }
    return box;
  };
  const rate = (score) => {
    // The first shown response without a rating gets it, so 5, 3, 4 rates three cards in turn.
    for (const card of document.querySelectorAll("[id^=rating-]")) {
      if (!visible(card) || card.querySelector("input:checked")) continue;
      const input = card.querySelector(`input[type=radio][value="${score}"]`);
      if (input) { input.click(); return true; }
    }
    return false;
  };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const el = document.activeElement;
    if (e.key === "Enter" && el && el.closest("#annotator")) { setTimeout(focusItem, 0); return; }
    if (e.key === "Enter" && el && el.closest("[id^=rank-]")) {
      el.dispatchEvent(new Event("change", {bubbles: true}));
      setTimeout(() => click("#submit-list"), 50);
      e.preventDefault();
      return;
    }
    if (e.key === "Escape") { help().hidden = true; return; }
    if (typing(el)) return;
    if (e.key === "?") { const box = help(); box.hidden = !box.hidden; e.preventDefault(); return; }
    const choice = {"1": 0, "2": 1, "3": 2, "4": 3}[e.key];
    if (choice !== undefined && visible(document.querySelector("#choice"))) {
      const inputs = document.querySelectorAll("#choice input[type=radio]");
      if (inputs[choice] && visible(inputs[choice])) { inputs[choice].click(); e.preventDefault(); }
    } else if (["1", "2", "3", "4", "5"].includes(e.key)) {
      if (rate(e.key)) e.preventDefault();
    } else if (e.key === "Enter") {
      if (click("#submit-pair") || click("#submit-list")) e.preventDefault();
    } else if (e.key === "s" || e.key === "S") {
      if (click("#skip")) e.preventDefault();
    } else if (e.key === "u" || e.key === "U") {
      if (click("#undo")) e.preventDefault();
    }
  });
})();
</script>
""".replace("KEY_ROWS", repr("".join(f"<tr><th>{key}</th><td>{what}</td></tr>" for key, what in KEYS)))

CSS = """
.ps-response { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 0.6em 0.9em; }
.ps-response-title { font-weight: 600; opacity: 0.7; margin-bottom: 0.3em; }
.ps-prompt { border-left: 4px solid var(--color-accent); padding: 0.3em 0.9em; margin: 0.4em 0; }
.ps-turn { margin: 0.3em 0; } .ps-role { font-size: 0.8em; text-transform: uppercase; opacity: 0.6; }
.ps-bar { height: 10px; background: var(--border-color-primary); border-radius: 5px; overflow: hidden; }
.ps-bar-fill { height: 100%; background: var(--color-accent); transition: width 0.5s; }
.ps-project-progress { margin-bottom: 0.6em; }
/* Model output stays inside its card: a long code line scrolls within the card instead of running
   across the next one (a flex child's min-width defaults to its content's width). */
.ps-response { min-width: 0; max-width: 100%; overflow-wrap: anywhere; }
.ps-response pre { max-width: 100%; overflow-x: auto; white-space: pre; }
.ps-response table { display: block; max-width: 100%; overflow-x: auto; }
#resp-a, #resp-b, [id^=arena-card-], [id^=cmp-col-], [id^=bon-card-] { min-width: 0; }
#ps-help { position: fixed; top: 15%; left: 50%; transform: translateX(-50%); z-index: 1000;
  background: var(--background-fill-primary); color: var(--body-text-color); padding: 1em 1.5em;
  border: 1px solid var(--border-color-primary); border-radius: 8px; box-shadow: 0 8px 30px rgba(0, 0, 0, 0.3); }
#ps-help th { text-align: left; padding-right: 1.2em; font-family: var(--font-mono); }
.ps-job { margin: 0.3em 0; } .ps-job-reason { color: var(--error-text-color); font-weight: 600; }
"""


def build_app(ctx: UIContext) -> gr.Blocks:
    with gr.Blocks(title="prefstudio", analytics_enabled=False) as demo:
        gr.Markdown("## prefstudio · preference annotation")
        signed_in = gr.HTML("", elem_id="signed-in", visible=False)  # accounts mode: who, and Log out
        with gr.Tabs(elem_id="main-tabs"):
            with gr.Tab("Annotate", id="annotate") as annotate_tab:
                annotate = build_annotate_tab(ctx)
                release_on_close(ctx, annotate, demo)
            with gr.Tab("Projects", id="projects") as projects_tab:
                setup = build_projects_tab(ctx)
            with gr.Tab("Data", id="data") as data_tab:
                data = build_data_tab(ctx)
            with gr.Tab("Train", id="train") as train_tab:
                train = build_train_tab(ctx)
            with gr.Tab("Models", id="models") as models_tab:
                trained = build_models_tab(ctx)
            with gr.Tab("Best-of-N", id="bon") as bon_tab:
                best = build_best_of_n_tab(ctx)
            with gr.Tab("Compare", id="compare") as compare_tab:
                comparing = build_compare_tab(ctx)
            with gr.Tab("Review", id="review") as review_tab:
                reviewing = build_review_tab(ctx, annotate.annotator)
            with gr.Tab("Team", id="team") as team_tab:
                team = build_team_tab(ctx, annotate.annotator)

        # The annotator name persists in the browser, so a reload picks up where it left off.
        # A fixed secret: the default is random per process, which would forget the name on restart.
        saved_name = gr.BrowserState("", storage_key="prefstudio-annotator", secret="prefstudio-annotator-name")
        def remember_name(name, request: gr.Request):
            caller(ctx, request, Permission.label)
            return name

        annotate.annotator.change(remember_name, annotate.annotator, saved_name, api_name="remember_name")

        def names_update(actor: Actor, current=None):
            names = project_choices(ctx, actor, projects.project_names(ctx.db))
            return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

        def export_names(actor: Actor, current=None):
            return names_update(actor, current) if has(actor, Permission.import_export) else gr.update(choices=[])

        # What each tab needs: the UI shows a role what it may do (the handlers refuse the rest).
        tab_permissions = {projects_tab: Permission.manage_projects, train_tab: Permission.run_jobs,
                           models_tab: Permission.manage_models, bon_tab: Permission.run_inference,
                           compare_tab: Permission.vote_arena, data_tab: Permission.view_own_stats,
                           review_tab: Permission.review, team_tab: Permission.view_team_stats}
        controls = {data.export: Permission.import_export, comparing.side_by_side: Permission.run_inference}
        name_boxes = [annotate.annotator, comparing.annotator, best.annotator]

        def role_view(actor: Actor) -> dict:
            # A tab's button goes only with visible="hidden" (Gradio 6 keeps it for visible=False).
            shown = {**{tab: gr.update(visible=True if has(actor, p) else "hidden") for tab, p in tab_permissions.items()},
                     **{c: gr.update(visible=has(actor, p)) for c, p in controls.items()}}
            # With accounts the annotator is the login: the name fields show it and cannot be edited.
            names = {} if actor.local else {box: gr.update(value=actor.name, interactive=False) for box in name_boxes}
            if not actor.local:  # the Annotate tab says who is signed in instead (and how to log out)
                names[annotate.annotator] = gr.update(value=actor.name, visible=False)
            return {**shown, **names, signed_in: signed_in_line(actor),
                    train.poller: gr.Timer(active=has(actor, Permission.run_jobs))}

        def on_load(saved, typed, project, view, request: gr.Request):
            # Every role labels: this refuses only a caller who is not logged in.
            actor = caller(ctx, request, Permission.label, typed_name=typed or saved)
            # The inputs are a snapshot from when the page asked: never blank a name or a project the
            # annotator picked meanwhile, only fill in what was remembered.
            name = gr.update(value=saved) if saved and not typed else gr.update()
            picked = names_update(actor, project)
            # The item comes with the name and project it is for, so the status line never asks
            # for a name it already has.
            item = annotate.start(picked["value"], actor.name if not actor.local else typed or saved, view)
            setup_choices = setup.refresh_choices(ctx) if has(actor, Permission.manage_projects) else gr.update()
            return {**item, annotate.annotator: name, annotate.project: picked, data.project: export_names(actor),
                    setup.project: setup_choices, **data_views(ctx, data, actor), **role_view(actor)}

        demo.load(on_load, [saved_name, annotate.annotator, annotate.project, annotate.view],
                  [annotate.project, data.project, setup.project, *data.views(), *annotate.all_outputs(),
                   *tab_permissions, *controls, *name_boxes, signed_in, train.poller], api_name="page_load")

        def annotate_opened(current, request: gr.Request):
            return names_update(caller(ctx, request, Permission.label), current)

        def data_opened(current, request: gr.Request):
            actor = caller(ctx, request, Permission.view_own_stats)
            return {data.project: export_names(actor, current), **data_views(ctx, data, actor)}

        def projects_opened(current, request: gr.Request):
            caller(ctx, request, Permission.manage_projects)
            return setup.refresh_choices(ctx, current)

        def train_opened(current, job, request: gr.Request):
            caller(ctx, request, Permission.run_jobs)
            return train_choices(ctx, train, current, job)

        def models_opened(current, request: gr.Request):
            return show_models(ctx, request, current)

        def bon_opened(project, reward, policy, request: gr.Request):
            return best_of_n_choices(ctx, request, project, reward, policy)

        def compare_opened(request: gr.Request, *current):
            return compare_choices(ctx, request, *current)

        annotate_tab.select(annotate_opened, annotate.project, annotate.project, api_name="annotate_opened")
        data_tab.select(data_opened, data.project, [data.project, *data.views()], api_name="data_opened")
        projects_tab.select(projects_opened, setup.project, setup.project, api_name="projects_opened")
        train_tab.select(train_opened, [train.project, train.job], [train.project, train.job, *train.pickers],
                         api_name="train_opened")
        models_tab.select(models_opened, trained.model,
                          [trained.table, trained.model, trained.evaluations, trained.eval_plot],
                          api_name="models_opened")
        bon_tab.select(bon_opened, [best.project, best.reward, best.policy], [best.project, best.reward, best.policy],
                       api_name="bon_opened")
        compare_tab.select(compare_opened, comparing.select_inputs, comparing.select_outputs,
                           api_name="compare_opened")

        def review_tab_opened(typed, current, request: gr.Request):
            return names_update(caller(ctx, request, Permission.review, typed_name=typed), current)

        def team_tab_opened(typed, current, request: gr.Request):
            return names_update(caller(ctx, request, Permission.view_team_stats, typed_name=typed), current)

        review_tab.select(review_tab_opened, [annotate.annotator, reviewing.project], reviewing.project,
                          api_name="review_opened")
        team_tab.select(team_tab_opened, [annotate.annotator, team.project], team.project, api_name="team_opened")
    return demo


def signed_in_line(actor: Actor) -> dict:
    """Accounts mode: who is signed in, and the way out; hidden in local mode."""
    if actor.local or not actor.name:
        return gr.update(visible=False)
    return gr.update(visible=True, value=f'Signed in as <b>{html.escape(actor.name)}</b> · '
                                         '<a href="/logout" id="log-out">Log out</a>')


def launch_kwargs() -> dict:
    """Arguments for Blocks.launch that Gradio 6 takes there rather than in Blocks()."""
    # No node SSR server, no MCP server, no monitoring endpoint: just the UI and its API.
    return {"head": SHORTCUTS_JS, "css": CSS, "footer_links": ["api"], "ssr_mode": False, "mcp_server": False,
            "enable_monitoring": False, "pwa": False}
