"""The web front: a FastAPI app with the login page, logout, and a gate in front of Gradio.

The gate is ASGI middleware around the whole app, so it sees every request whatever route Gradio
registers (the page, /config, every /gradio_api/... call, file routes, the queue's stream): in
accounts mode a request without a live session gets 401 (or, for a page, a redirect to /login)
before Gradio sees it. The session's user then reaches Gradio through mount_gradio_app's
auth_dependency, which Gradio puts on request.username for the handlers (annotation.auth.actor).
In single-user local mode nobody logs in, and only this machine (loopback) is served.

The cookie is first-party, HttpOnly and SameSite=Lax: it works in a private window that blocks
third-party cookies, page scripts cannot read it, and other sites cannot post with it.
"""
from __future__ import annotations

import html
import ipaddress
import json
from urllib.parse import quote, urlsplit

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from annotation.auth import sessions
from storage.db import Database

USER_KEY = "prefstudio.user"  # where the gate leaves the session's user in the ASGI scope
LOCAL_USER = ""  # the "user" Gradio is told in local mode: not None (so Gradio serves), never a name
OPEN_PATHS = {"/login", "/login/", "/logout", "/logout/"}

FIRST_ADMIN_HINT = "create the first admin with `python app.py users add NAME --role admin`"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SessionGate:
    """ASGI middleware: every request passes here first (see the module's docstring)."""

    def __init__(self, app, db: Database) -> None:
        self.app, self.db = app, db

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        conn = HTTPConnection(scope)
        visitor = await run_in_threadpool(sessions.visitor, self.db, conn.cookies.get(sessions.COOKIE))
        if visitor.local:
            if not is_loopback(conn.client.host if conn.client else None):
                # The server was started on loopback; this only happens behind a proxy or a tunnel.
                return await _refuse(scope, receive, send, 403, "single-user local mode serves this machine "
                                     f"only; {FIRST_ADMIN_HINT} to let others log in")
            scope[USER_KEY] = LOCAL_USER
        elif visitor.user is not None:
            scope[USER_KEY] = visitor.user
        elif _wants_page(scope, conn):
            target = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
            return await RedirectResponse(f"/login?next={quote(target)}", status_code=303)(scope, receive, send)
        else:
            return await _refuse(scope, receive, send, 401, "log in first (open the app's page in a browser)")
        await self.app(scope, receive, send)


def _wants_page(scope, conn: HTTPConnection) -> bool:
    return (scope["type"] == "http" and scope.get("method") == "GET" and not scope["path"].startswith("/gradio_api")
            and "text/html" in conn.headers.get("accept", ""))


async def _refuse(scope, receive, send, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"error": message}).encode()
    await Response(body, status_code=status, media_type="application/json")(scope, receive, send)


def session_user(request: Request) -> str | None:
    """mount_gradio_app's auth_dependency: the user the gate found (None: Gradio refuses too)."""
    return request.scope.get(USER_KEY)


def _safe_next(target: str | None) -> str:
    # Only a path on this server: never an absolute URL or //host (an open redirect).
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>prefstudio · log in</title>
<style>
 body { font-family: system-ui, sans-serif; background: #f6f7f9; color: #1f2328; display: grid;
        place-items: center; min-height: 100vh; margin: 0; }
 form { background: #fff; border: 1px solid #d0d7de; border-radius: 10px; padding: 2em 2.2em; width: 20em;
        box-shadow: 0 4px 18px rgba(0, 0, 0, 0.06); }
 h1 { font-size: 1.25em; margin: 0 0 1.2em; } label { display: block; margin: 0.9em 0 0.3em; font-weight: 600; }
 input[type=text], input[type=password] { width: 100%; box-sizing: border-box; padding: 0.55em; font-size: 1em;
        border: 1px solid #d0d7de; border-radius: 6px; }
 button { margin-top: 1.4em; width: 100%; padding: 0.65em; font-size: 1em; border: 0; border-radius: 6px;
        background: #f97316; color: #fff; font-weight: 600; cursor: pointer; }
 .note { margin: 0 0 1em; padding: 0.6em 0.8em; border-radius: 6px; background: #fff4e5; }
 .note.error { background: #ffebe9; color: #a40e26; }
</style></head>
<body><form method="post" action="/login">
<h1>prefstudio · log in</h1>
NOTE
<input type="hidden" name="next" value="NEXT">
<label for="name">Name</label><input id="name" name="name" type="text" autocomplete="username" value="NAME" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="log-in">Log in</button>
</form></body></html>
"""


def login_page(status: int = 200, note: str = "", error: bool = False, name: str = "", next_path: str = "/"):
    shown = f'<p class="note{" error" if error else ""}" role="alert" id="login-note">{html.escape(note)}</p>' \
        if note else ""
    page = (LOGIN_PAGE.replace("NOTE", shown).replace("NEXT", html.escape(_safe_next(next_path)))
            .replace("NAME", html.escape(name)))
    # Never cached: the page answers for one attempt, and may carry a name.
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


def build_web_app(db: Database, blocks: gr.Blocks, limiter: sessions.LoginLimiter | None = None,
                  **gradio_kwargs) -> FastAPI:
    """The whole server: login routes, the gate, and the Gradio app mounted at /."""
    limiter = limiter or sessions.LoginLimiter()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/login")
    @app.get("/login/")
    async def show_login(request: Request, next: str = "/", out: int = 0):  # noqa: A002 (the query's name)
        if (await run_in_threadpool(sessions.visitor, db, None)).local:
            return RedirectResponse("/", status_code=303)  # local mode: nobody logs in
        return login_page(note="You are logged out." if out else "", next_path=next)

    @app.post("/login")
    @app.post("/login/")
    async def log_in(request: Request):
        form = await request.form()
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        next_path = _safe_next(str(form.get("next", "/")))
        address = request.client.host if request.client else "?"
        wait = limiter.attempt(name, address)
        if wait:
            return login_page(429, f"Too many failed logins: wait {int(wait) + 1} seconds and try again.", True,
                              name, next_path)
        token = await run_in_threadpool(sessions.log_in, db, name, password)
        if token is None:
            return login_page(401, "Wrong name or password.", True, name, next_path)
        limiter.succeeded(name, address)
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(sessions.COOKIE, token, max_age=int(sessions.LIFETIME.total_seconds()), path="/",
                            httponly=True, samesite="lax", secure=request.url.scheme == "https")
        return response

    @app.get("/logout")
    @app.post("/logout")
    async def log_out(request: Request):
        await run_in_threadpool(sessions.log_out, db, request.cookies.get(sessions.COOKIE))
        response = RedirectResponse("/login?out=1", status_code=303)
        response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="lax")
        return response

    app.add_middleware(SessionGate, db=db)
    return gr.mount_gradio_app(app, blocks, path="/", auth_dependency=session_user, **gradio_kwargs)
