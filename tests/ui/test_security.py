"""Secure by default: local only without a password, and the browser reads only the studio's folders."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import REPO, free_port
from studio.ui.app import UsageError, parse_args, serving_options


@pytest.mark.parametrize("flag", ["--share", "--listen"])
def test_exposing_without_a_password_is_refused(flag, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "STUDIO_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "app.py", flag], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr and "--auth" in proc.stderr
    assert not (tmp_path / "home").exists()  # nothing was started


def test_serving_options():
    local = serving_options(parse_args([]), env={})
    assert local["server_name"] == "127.0.0.1" and local["auth"] is None and not local["share"]
    listen = serving_options(parse_args(["--listen"]), env={"STUDIO_AUTH": "ann:secret"})
    assert listen["server_name"] == "0.0.0.0" and listen["auth"] == [("ann", "secret")]
    shared = serving_options(parse_args(["--share", "--auth", "a:b,c:d"]), env={})
    assert shared["share"] and shared["auth"] == [("a", "b"), ("c", "d")]
    with pytest.raises(UsageError, match="USER:PASSWORD"):
        serving_options(parse_args(["--listen", "--auth", "nopassword"]), env={})
    with pytest.raises(UsageError, match="Space"):  # a Space is public: a password is required there too
        serving_options(parse_args([]), env={"SPACE_ID": "me/studio"})
    space = serving_options(parse_args(["--share"]), env={"SPACE_ID": "me/studio", "STUDIO_AUTH": "a:b"})
    assert space["server_name"] == "0.0.0.0" and not space["share"]


@pytest.fixture
def served(home, tmp_path):
    """The app launched in this process with a password; yields (base url, logged-in client, home)."""
    from studio.ui.app import launch
    from studio.ui.context import StudioContext

    ctx = StudioContext.create()
    port = free_port()
    serving = {"server_name": "127.0.0.1", "port": port, "share": False, "auth": [("ann", "secret")],
               "max_file_size": "10mb"}
    demo = launch(ctx, serving, prevent_thread_lock=True, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield base, client, home, demo
    finally:
        demo.close()
        ctx.close()


def test_files_are_served_only_from_the_studio_folders(served, tmp_path):
    base, client, home, demo = served
    allowed = home / "runs" / "job" / "samples" / "step-000010_p0.txt"
    allowed.parent.mkdir(parents=True)
    allowed.write_text("a sample")
    outside = tmp_path / "outside.txt"
    outside.write_text("not for the browser")

    assert client.get("/config").status_code == 401  # nothing without the password
    assert client.get(f"/gradio_api/file={allowed}").status_code in (401, 403)
    login = client.post("/login", data={"username": "ann", "password": "secret"})
    assert login.status_code == 200

    assert client.get(f"/gradio_api/file={allowed}").text == "a sample"
    refused = ["/etc/passwd", f"{outside}", f"{home}/../outside.txt", f"{home}/../../../../../etc/passwd",
               "../../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd", f"{home}/queue.db",
               f"{home}/runs/job/samples/../../../queue.db"]
    for path in refused:
        response = client.get(f"/gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code)
        assert "root:" not in response.text
    assert client.get("/monitoring").status_code == 403  # monitoring dashboard off
    assert demo.max_file_size == 10 * 1024 * 1024


def test_auth_is_required_for_a_wrong_password(served):
    _, client, _, _ = served
    assert client.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
    assert client.get("/config").status_code == 401


def test_blocked_paths_cover_the_queue_database_and_tokens(home):
    from studio.ui.context import StudioContext

    ctx = StudioContext.create()
    blocked = ctx.blocked_paths()
    assert ctx.store.path in blocked and Path(f"{ctx.store.path}-wal") in blocked
    assert Path.home() / ".cache" / "huggingface" / "token" in blocked
    assert not ctx.can_serve(ctx.store.path)
    assert ctx.can_serve(home / "runs" / "x" / "samples" / "a.png")


def test_a_symlink_never_reaches_a_blocked_file(served, tmp_path):
    """Issue #18 item 2: a link inside an allowed folder must not serve the queue database or `.env`.
    Capitals in the link's path matter: Gradio lower-cases paths before its block-list check."""
    base, client, home, demo = served
    (home / ".env").write_text("HF_TOKEN=secret-value")
    folder = home / "runs" / "Job" / "Samples"
    folder.mkdir(parents=True)
    links = {"Queue.db": home / "queue.db", "Env.txt": home / ".env", "Outside.txt": tmp_path / "outside.txt"}
    (tmp_path / "outside.txt").write_text("not for the browser")
    for name, target in links.items():
        (folder / name).symlink_to(target)
    (folder / "Fine.txt").write_text("a sample")
    assert client.post("/login", data={"username": "ann", "password": "secret"}).status_code == 200
    assert client.get(f"/gradio_api/file={folder / 'Fine.txt'}").text == "a sample"
    for name in links:
        for route in ("/gradio_api/file=", "/file="):
            response = client.get(f"{route}{folder / name}")
            assert response.status_code in (403, 404), (name, route, response.status_code)
            assert "SQLite format 3" not in response.text and "secret-value" not in response.text


def test_the_page_without_a_session_is_a_small_sign_in_form(served):
    _, client, _, _ = served
    page = client.get("/")
    assert page.status_code == 200 and "Sign in" in page.text and len(page.content) < 4096
    assert "gradio_config" not in page.text  # none of the interface before the password
    assert client.post("/login", data={"username": "ann", "password": "secret"}).status_code == 200
    full, again = client.get("/"), client.get("/", headers={"Accept-Encoding": "identity"})
    assert "Training Studio" in full.text and len(full.content) > 50_000  # the interface itself
    assert full.headers["content-encoding"] in ("gzip", "br") and int(full.headers["content-length"]) < 400_000
    assert again.text == full.text and "content-encoding" not in again.headers  # from the cache, same page
