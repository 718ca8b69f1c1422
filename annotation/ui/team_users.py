"""The Team tab's user section (admins): create a user, change a role, set a new password, add or
remove a project membership; the same services as `app.py users`.

Every handler checks `manage_users` on the server first. A password arrives only in the fields it
was typed into, is handed to the hashing service and is never sent back, shown or logged: the
fields are emptied after each try, and messages name the user, never the password.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr

from annotation.auth import accounts
from annotation.auth.actor import actor_of
from annotation.auth.passwords import same_password
from annotation.services.projects import project_names
from annotation.ui.access import Actor, Permission, caller, has
from annotation.ui.context import UIContext
from storage.errors import InputError
from storage.models import Role

ROLES = [r.value for r in Role]

# show(request, typed_name, project) -> the Team tab's refreshed views (annotation.ui.team)
Refresh = Callable[..., dict]


@dataclass
class UserForms:
    new_name: gr.Textbox
    new_role: gr.Dropdown
    new_password: gr.Textbox
    new_again: gr.Textbox
    create: gr.Button
    user: gr.Dropdown  # the existing user the buttons below act on
    role: gr.Dropdown
    set_role: gr.Button
    password: gr.Textbox
    again: gr.Textbox
    set_password: gr.Button
    project: gr.Dropdown
    add_member: gr.Button
    remove_member: gr.Button
    status: gr.Markdown  # what the last change did, beside the forms

    def pickers(self) -> list:
        return [self.user, self.project]

    def choices(self, ctx: UIContext, users: list[str]) -> dict:
        """The pickers offer every user and project (the values stay, so a pick survives a refresh)."""
        return {self.user: gr.update(choices=users), self.project: gr.update(choices=project_names(ctx.db))}


def _password_box(label: str, elem_id: str) -> gr.Textbox:
    # autocomplete=new-password: the browser must not fill in the admin's own saved password.
    return gr.Textbox(label=label, type="password", elem_id=elem_id,
                      html_attributes=gr.InputHTMLAttributes(autocomplete="new-password"))


def build_user_forms() -> UserForms:
    """The components, laid out under the Users table; `wire_user_forms` connects them."""
    with gr.Accordion("Manage users", open=True, elem_id="manage-users"):
        gr.Markdown("New user (at least 8 characters of password; they can log in at once):")
        with gr.Row():
            new_name = gr.Textbox(label="Name", elem_id="new-user-name")
            new_role = gr.Dropdown(label="Role", choices=ROLES, value=Role.annotator.value, elem_id="new-user-role")
            new_password = _password_box("Password", "new-user-password")
            new_again = _password_box("Password again", "new-user-again")
            create = gr.Button("Create user", variant="primary", elem_id="create-user")
        gr.Markdown("Existing user:")
        with gr.Row():
            user = gr.Dropdown(label="User", choices=[], allow_custom_value=True, elem_id="user-pick")
            role = gr.Dropdown(label="Role", choices=ROLES, value=Role.annotator.value, elem_id="user-role")
            set_role = gr.Button("Change role", elem_id="set-role")
        with gr.Row():
            password = _password_box("New password (ends their sessions)", "user-password")
            again = _password_box("New password again", "user-again")
            set_password = gr.Button("Set password", elem_id="set-password")
        with gr.Row():
            project = gr.Dropdown(label="Member of project", choices=[], allow_custom_value=True,
                                  elem_id="member-project")
            add_member = gr.Button("Add to project", elem_id="add-member")
            remove_member = gr.Button("Remove from project", elem_id="remove-member")
        status = gr.Markdown("", elem_id="users-status")
    return UserForms(new_name, new_role, new_password, new_again, create, user, role, set_role, password, again,
                     set_password, project, add_member, remove_member, status)


def wire_user_forms(ctx: UIContext, forms: UserForms, annotator: gr.Textbox, shown: gr.Dropdown, views: list,
                    show: Refresh) -> None:
    """`annotator`: the typed name (local mode's caller); `shown`: the Team tab's project, whose
    views are refreshed after each change; `show` refreshes them."""
    secrets = [forms.new_password, forms.new_again, forms.password, forms.again]
    outputs = [*views, forms.status, *secrets, forms.new_name]

    def finish(request: gr.Request, typed_name, project, message: str, done: bool, cleared=()) -> dict:
        emptied = {box: "" for box in secrets}
        if not done:
            return {forms.status: f"⚠️ {message}", **emptied}
        if not has(actor_of(ctx, request, typed_name), Permission.view_team_stats):
            # The admin demoted themselves, or created the first account in local mode (from now on
            # everyone logs in): this page's next call would be refused.
            return {forms.status: f"✅ {message} Reload the page to go on.", **emptied}
        return {**show(request, typed_name, project), forms.status: f"✅ {message}", **emptied,
                **{box: "" for box in cleared}}

    def act(request: gr.Request, typed_name, project, change: Callable[[Actor], str], cleared=()) -> dict:
        """`cleared`: the fields emptied once the change is made (the password fields always are)."""
        actor = caller(ctx, request, Permission.manage_users, typed_name=typed_name)
        try:
            message = change(actor)
        except InputError as exc:
            return finish(request, typed_name, project, str(exc), done=False)
        return finish(request, typed_name, project, message, done=True, cleared=cleared)

    def create_user(typed_name, shown_project, new_name, new_role, password, password_again, request: gr.Request):
        def change(actor: Actor):
            accounts.create_account(ctx.db, new_name, new_role, password, password_again)
            return f"Added {new_role} {new_name.strip()!r}: they can log in now."
        return act(request, typed_name, shown_project, change, cleared=[forms.new_name])

    def set_user_role(typed_name, shown_project, user, role, request: gr.Request):
        def change(actor: Actor):
            accounts.set_role(ctx.db, user, role)
            return f"{user!r} is now {role}."
        return act(request, typed_name, shown_project, change)

    def set_user_password(typed_name, shown_project, user, password, password_again, request: gr.Request):
        def change(actor: Actor):
            same_password(password, password_again)
            accounts.set_password(ctx.db, user, password)
            if user.strip() == actor.name:
                return "Your password was changed and your sessions ended: log in again with the new one."
            return f"New password set for {user!r}; their sessions were ended."
        return act(request, typed_name, shown_project, change)

    def membership(add: bool):
        def handler(typed_name, shown_project, user, project, request: gr.Request):
            def change(actor: Actor):
                if add:
                    done = accounts.add_membership(ctx.db, user, project)
                    return f"{user!r} {'is now' if done else 'already was'} a member of {project!r}."
                done = accounts.remove_membership(ctx.db, user, project)
                return f"{user!r} {'left' if done else 'was not a member of'} {project!r}."
            return act(request, typed_name, shown_project, change)
        handler.__name__ = "add_member" if add else "remove_member"
        return handler

    common = [annotator, shown]
    forms.create.click(create_user, [*common, forms.new_name, forms.new_role, forms.new_password, forms.new_again],
                       outputs, api_name="create_user")
    forms.set_role.click(set_user_role, [*common, forms.user, forms.role], outputs, api_name="set_user_role")
    forms.set_password.click(set_user_password, [*common, forms.user, forms.password, forms.again], outputs,
                             api_name="set_user_password")
    forms.add_member.click(membership(True), [*common, forms.user, forms.project], outputs, api_name="add_member")
    forms.remove_member.click(membership(False), [*common, forms.user, forms.project], outputs,
                              api_name="remove_member")
