"""The operator console at `/console`: server-rendered pages over the operations layer.

Served by the receiver's app (one process fewer to run; its pages never touch the hot
path: they run on the admin API's small connection pool, in Starlette's thread pool).
Signed in with a token, exchanged once for an HttpOnly, SameSite=Strict session cookie;
every form carries the session's CSRF token. A page only shows what its actor may see,
and a button only to an actor who may press it; the operations check both again.

`app.py` is the machinery (sessions, CSRF, rendering, errors); each page group is a
module (`overview.py`, `dead_letters.py`, ...) exposing `routes(console)`, listed once in
`PAGES` in `site.py`.
"""
