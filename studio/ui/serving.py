"""How the studio's pages are served under load and behind a password.

- `SmallLoginPage`: with a password set, a visitor without a session gets a 2 KB sign-in form instead of
  Gradio's page (which loads the whole 2 MB interface to show its own login box). The form posts to
  Gradio's own `/login`, so Gradio still checks the password and issues the session cookie.
- `PageCache`: the first page is Gradio's template with the whole interface's config inlined (3 MB, sent
  uncompressed by Gradio); building it costs tens of milliseconds of Python per request, which under 50
  concurrent clients queued every request behind the others. The page is the same for every request with
  the same user, host and query, so it is rendered once, compressed once (gzip, brotli) and served again.

Both are plain ASGI middlewares handed to FastAPI through `launch(app_kwargs={"middleware": ...})`."""
from __future__ import annotations

import html
import threading

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Training Studio: sign in</title>
<style>body{font-family:system-ui,sans-serif;background:#f3f4f6;display:flex;min-height:100vh;margin:0;
align-items:center;justify-content:center}form{background:#fff;padding:28px;border-radius:12px;width:300px;
box-shadow:0 2px 12px #0002}input{width:100%;box-sizing:border-box;margin:6px 0 14px;padding:8px;
border:1px solid #d1d5db;border-radius:6px}button{width:100%;padding:9px;border:0;border-radius:6px;
background:#4f46e5;color:#fff;font-weight:600}#err{color:#b91c1c;min-height:1.2em}</style></head><body>
<form id="f"><h3>Training Studio</h3><p>{message}</p><label>User<input name="username" autocomplete="username"
required></label><label>Password<input name="password" type="password" autocomplete="current-password"
required></label><button>Sign in</button><p id="err"></p></form><script>
document.getElementById('f').onsubmit=async e=>{e.preventDefault();
const r=await fetch('login',{method:'POST',body:new URLSearchParams(new FormData(e.target)),credentials:'same-origin'});
if(r.ok){location.reload()}else{document.getElementById('err').textContent='Wrong user or password.'}};
</script></body></html>"""
PAGE_PATHS = ("/", "")


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _cookies(scope) -> dict[str, str]:
    out = {}
    for part in _header(scope, b"cookie").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            out[key] = value
    return out


def session_user(app, scope) -> str | None:
    """The signed-in user of this request, read the way Gradio's `get_current_user` reads it."""
    cookies = _cookies(scope)
    token = cookies.get(f"access-token-{app.cookie_id}") or cookies.get(f"access-token-unsecure-{app.cookie_id}")
    return app.tokens.get(token) if token else None


async def _send_html(send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


class SmallLoginPage:
    def __init__(self, app, message: str = "Sign in with the --auth / STUDIO_AUTH credentials."):
        self.app = app
        self.body = LOGIN_PAGE.replace("{message}", html.escape(message)).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") in PAGE_PATHS:
            app = scope.get("app")
            if getattr(app, "auth", None) and session_user(app, scope) is None:
                await _send_html(send, self.body)
                return
        await self.app(scope, receive, send)


class PageCache:
    """Keeps the rendered first page per (user, host, query), compressed once: Gradio's compression skips
    paths without a file extension, so its 3 MB page went out raw. Other requests pass through untouched."""

    def __init__(self, app, size: int = 32):
        self.app = app
        self.size = size
        self.pages: dict[tuple, dict[str, tuple[list, bytes]]] = {}
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in PAGE_PATHS:
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        user = session_user(app, scope) if getattr(app, "auth", None) else None
        key = (user, _header(scope, b"host"), scope.get("query_string", b""), _header(scope, b"x-forwarded-host"))
        variants = self.pages.get(key)
        if variants is None:
            status, headers, body = await self._render(scope, receive)
            if status != 200:
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            variants = compressed_variants(headers, body)
            with self.lock:
                if len(self.pages) >= self.size:
                    self.pages.pop(next(iter(self.pages)))
                self.pages[key] = variants
        accepted = _header(scope, b"accept-encoding")
        encoding = "br" if "br" in accepted else "gzip" if "gzip" in accepted else ""
        headers, body = variants[encoding]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _render(self, scope, receive) -> tuple[int, list, bytes]:
        parts: dict = {"status": 500, "headers": [], "body": b""}

        async def keep(message):
            if message["type"] == "http.response.start":
                parts["status"], parts["headers"] = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                parts["body"] += message.get("body", b"")

        await self.app(scope, receive, keep)
        return parts["status"], parts["headers"], parts["body"]


def compressed_variants(headers: list, body: bytes) -> dict[str, tuple[list, bytes]]:
    """"" (raw), "gzip" and "br" versions of one response, each with its own length and encoding headers."""
    import gzip

    import brotli

    plain = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-encoding")]
    out = {}
    for encoding, data in (("", body), ("gzip", gzip.compress(body, 6)), ("br", brotli.compress(body, quality=5))):
        extra = [(b"content-encoding", encoding.encode())] if encoding else []
        out[encoding] = (plain + extra + [(b"vary", b"Accept-Encoding"),
                                          (b"content-length", str(len(data)).encode())], data)
    return out
