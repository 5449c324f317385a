"""The allow/deny decision for files the browser asks for, made on real paths (issue #18 item 2).

Gradio compares its blocked list with the requested path lower-cased before resolving it, so a
symlink inside an allowed folder (`runs/x/link -> STUDIO_HOME/queue.db`) whose path has a capital
letter is never resolved and passes the block list. This ASGI middleware runs before Gradio's file
route: it resolves the requested path with `os.path.realpath` (every symlink followed) and refuses it
when the real file is blocked, or when a link leads outside the folders the browser may read.
Gradio's own checks still run after it for everything it lets through.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from starlette.responses import PlainTextResponse

FILE_ROUTE = "/file="  # gradio serves files at /file=PATH and /gradio_api/file=PATH


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def may_read(requested: str, blocked: Iterable[Path], roots: Iterable[Path]) -> bool:
    """False when the real file behind `requested` is blocked, or a link leads out of `roots`."""
    if requested.startswith(("http://", "https://")):
        return True  # not a file: Gradio refuses or proxies URLs itself
    absolute = os.path.abspath(requested)
    real = os.path.realpath(absolute)
    if any(_inside(real, os.path.realpath(b)) or _inside(absolute, os.path.abspath(b)) for b in blocked):
        return False
    if real != absolute and not any(_inside(real, os.path.realpath(r)) for r in roots):
        return False
    return True


class FileGuard:
    """Pure ASGI middleware: a 403 for refused file requests, everything else passes untouched."""

    def __init__(self, app, decide: Callable[[str], bool]):
        self.app, self.decide = app, decide

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("path", "")
            at = path.find(FILE_ROUTE)
            if at >= 0 and not self.decide(path[at + len(FILE_ROUTE):]):
                await PlainTextResponse("File not allowed.", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard_middleware(ctx) -> list:
    """`app_kwargs["middleware"]` for `Blocks.launch`: the guard bound to the studio's lists."""
    import tempfile

    from starlette.middleware import Middleware

    def decide(requested: str) -> bool:
        roots = [*ctx.allowed_roots(), Path(tempfile.gettempdir())]
        return may_read(requested, ctx.blocked_paths(), roots)

    return [Middleware(FileGuard, decide=decide)]
