"""Accounts, sessions and who may do what.

actor.py answers "who is calling" for every Gradio handler; passwords.py hashes passwords;
sessions.py signs browsers in and out; web.py puts the login page and the session check in front
of the Gradio app. In single-user local mode (no account has a password) nobody logs in.
"""
from annotation.auth.actor import ANONYMOUS, Actor, actor_of, local_mode

__all__ = ["ANONYMOUS", "Actor", "actor_of", "local_mode"]
