"""The studio UI: `python app.py [--listen] [--share] [--port N] [--auth USER:PASS]`.

Secure by default: it binds 127.0.0.1; serving beyond this computer (--listen, --share, a Hugging
Face Space) refuses to start without a password (--auth or STUDIO_AUTH). The browser may read files
only from STUDIO_HOME and the data roots (--data-root, STUDIO_DATA_ROOTS); the queue database and
credential files are blocked even there. The queue worker runs in a thread of this process and only
launches subprocesses: closing browsers never touches a job, and neither does restarting the app.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

EXIT_USAGE = 2
LOCAL = "127.0.0.1"
AUTH_MESSAGE = "Training Studio: sign in with the --auth / STUDIO_AUTH credentials."
CSS = """
.gradio-container { overflow: clip !important; }  /* "hidden" would stop the side panel from sticking */
#train-side { position: sticky; top: 8px; align-self: flex-start; }
.field-error { box-shadow: 0 0 0 2px #dc2626 !important; border-radius: 8px; }
.field-error .info, .field-error [data-testid="block-info"] + div { color: #b91c1c !important; }
.studio-hidden { display: none !important; }
/* a form section's small fields, two per line (studio/ui/forms.py: PAIRS) */
.studio-pairs .form { display: grid !important; grid-template-columns: repeat(2, minmax(0, 1fr)); }
.studio-pairs .form > :last-child:nth-child(odd) { grid-column: 1 / -1; }  /* a last field alone: full width */
@media (max-width: 640px) { .studio-pairs .form { grid-template-columns: minmax(0, 1fr); } }
#train-machines pre, #train-machines code { white-space: pre-wrap !important; overflow-wrap: anywhere; }
.studio-hint { opacity: .8; font-size: .92em; }
.studio-status { font-size: 1.02em; margin: 4px 0; }
.studio-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
                background: #e5e7eb; margin-right: 6px; }
.studio-status-running .studio-badge, .studio-status-completed .studio-badge { background: #bbf7d0; color: #14532d; }
.studio-status-pending .studio-badge { background: #dbeafe; color: #1e3a8a; }
.studio-status-stopped .studio-badge, .studio-status-interrupted .studio-badge { background: #fed7aa; color: #9a3412; }
.studio-status-failed .studio-badge { background: #fecaca; color: #991b1b; }
.studio-progress { height: 10px; background: #e5e7eb; border-radius: 5px; overflow: hidden; margin: 6px 0; }
.studio-progress > div { height: 100%; background: #16a34a; transition: width .5s; }
.studio-final { color: #991b1b; white-space: pre-wrap; }
#samples-meta th, #samples-meta th *, #queue-table th, #queue-table th * {  /* "step", not "ste p" */
  word-break: normal !important; overflow-wrap: normal !important; white-space: nowrap !important; }
"""


def studio_theme():
    """Gradio's Soft theme with the system's fonts: its web fonts were 200 KB of the first page."""
    import gradio as gr

    return gr.themes.Soft(font=("system-ui", "-apple-system", "Segoe UI", "sans-serif"),
                          font_mono=("ui-monospace", "SFMono-Regular", "Menlo", "monospace"))


class UsageError(Exception):
    """A refused start; the message says what to do."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="Training Studio: the browser UI.")
    p.add_argument("--listen", action="store_true", help="serve on every network interface (0.0.0.0); needs --auth")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link; needs --auth")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860))
    p.add_argument("--auth", metavar="USER:PASS", default=None,
                   help="password login (also STUDIO_AUTH; several as u1:p1,u2:p2)")
    p.add_argument("--data-root", action="append", default=[], metavar="FOLDER",
                   help="a folder (beside STUDIO_HOME) whose files the browser may show; repeatable")
    p.add_argument("--max-file-size", default="200mb", help="largest upload accepted (default 200mb)")
    p.add_argument("--no-worker", action="store_true",
                   help="do not serve the queue from this process (run `python -m studio queue run` instead)")
    return p.parse_args(argv)


def parse_auth(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        user, sep, password = item.partition(":")
        if not sep or not user.strip() or not password:
            raise UsageError("--auth / STUDIO_AUTH must look like USER:PASSWORD (several: u1:p1,u2:p2)")
        pairs.append((user.strip(), password))
    return pairs


def serving_options(args: argparse.Namespace, env: dict | None = None) -> dict:
    """Where and how to serve; raises UsageError when that would expose the studio without a password."""
    env = os.environ if env is None else env
    on_space = bool(env.get("SPACE_ID"))
    auth = parse_auth(args.auth if args.auth is not None else env.get("STUDIO_AUTH", ""))
    share = bool(args.share) and not on_space  # a Space is already public: no share tunnel there
    server_name = "0.0.0.0" if (args.listen or on_space) else LOCAL
    if (server_name != LOCAL or share) and not auth:
        what = "a Hugging Face Space" if on_space else ("--share" if share else "--listen")
        where = "add a STUDIO_AUTH secret (USER:PASSWORD) in the Space settings" if on_space else \
            "pass --auth USER:PASSWORD or set STUDIO_AUTH=USER:PASSWORD"
        raise UsageError(f"refusing to start: {what} makes the studio (it starts jobs and shows files) reachable "
                         f"from other computers, and no password is set; {where}.")
    return {"server_name": server_name, "port": args.port, "share": share, "auth": auth or None,
            "on_space": on_space, "max_file_size": args.max_file_size}


def build_app(ctx, serving: dict):
    """The Blocks app. `ctx`: a StudioContext (store, worker, TensorBoards, served folders)."""
    import gradio as gr

    from studio.ui.field_checks import WATCH_FIELDS
    from studio.ui.tabs.environment import build_environment_tab
    from studio.ui.tabs.monitor import build_monitor_tab
    from studio.ui.tabs.playground import build_playground_tab
    from studio.ui.tabs.preprocess import build_preprocess_tab
    from studio.ui.tabs.queue import build_queue_tab
    from studio.ui.tabs.samples import build_samples_tab
    from studio.ui.tabs.train import build_train_tab

    with gr.Blocks(title="Training Studio", analytics_enabled=False) as demo:
        gr.Markdown("## Training Studio · adapters for diffusion, music and language models")
        with gr.Tabs(selected="train", elem_id="studio-tabs") as tabs:
            with gr.Tab("Train", id="train", elem_id="tab-train") as train_tab:
                train = build_train_tab(ctx)
            with gr.Tab("Preprocess", id="preprocess", elem_id="tab-preprocess") as pre_tab:
                build_preprocess_tab(ctx, train, pre_tab)  # built when first opened; it follows the Train tab
            with gr.Tab("Queue", id="queue", elem_id="tab-queue") as queue_tab:
                queue = build_queue_tab(ctx)
            with gr.Tab("Monitor", id="monitor", elem_id="tab-monitor") as monitor_tab:
                monitor = build_monitor_tab(ctx)
            with gr.Tab("Samples", id="samples", elem_id="tab-samples") as samples_tab:
                samples = build_samples_tab(ctx)
            with gr.Tab("Playground", id="playground", elem_id="tab-playground") as play_tab:
                play = build_playground_tab(ctx)
            with gr.Tab("Environment", id="environment", elem_id="tab-environment") as env_tab:
                build_environment_tab(ctx, serving)
        _wire_across_tabs(ctx, tabs, train, queue, monitor, samples)
        # Only the visible tab polls: timers cost a request per tick per open browser. The browser switches
        # the timers itself (no request); the opened tab's own refresh then fills it.
        timers = [queue.timer, monitor.timer, samples.timer, play.timer]
        for tab, active in ((pre_tab, None), (train_tab, None), (queue_tab, queue.timer),
                            (monitor_tab, monitor.timer), (samples_tab, samples.timer), (play_tab, play.timer),
                            (env_tab, None)):
            event = tab.select(None, None, timers, js=timers_js([t is active for t in timers]))
            if active is queue.timer:
                event.then(queue.refresh, [queue.job, gr.State("")], queue.refresh_outputs, show_progress="hidden")
            elif active is monitor.timer:
                event.then(monitor.tick, monitor.inputs, monitor.outputs, show_progress="hidden")
            elif active is samples.timer:
                event.then(samples.refresh, samples.inputs, samples.outputs, show_progress="hidden")
            elif active is play.timer:
                event.then(play.refresh, [play.run], [play.run], show_progress="hidden")
        # "Start now" that queued: go where the run is watched (its timer on, the others off).
        train.started.then(lambda m: [gr.Tabs(selected="monitor"), *[gr.Timer(active=t is monitor.timer) for t in timers]]
                           if "queued" in (m or "") else [gr.skip()] * (1 + len(timers)), [train.message],
                           [tabs, *timers]).then(monitor.tick, monitor.inputs, monitor.outputs,
                                                 show_progress="hidden")
        # Nothing else runs at page load: each tab fills itself when opened (Queue, Monitor, Samples and
        # Playground above; the queue options when their section is unfolded). Every event the page runs
        # costs the browser a walk over the whole interface per component it ever touched (Gradio's
        # loading-status bookkeeping), so the first view runs none it does not show.
        demo.load(None, js=WATCH_FIELDS)  # the Train form's checks while editing (studio/ui/field_checks.py)
    # The studio offers no API page: leave its events out of the API description that Gradio writes into
    # the first page (3.2 MB of its 3.8 MB: every event listing each form field as a parameter). They
    # stay callable as before; only the description goes.
    for fn in demo.fns.values():
        fn.api_visibility = "undocumented" if fn.api_visibility == "public" else fn.api_visibility
    return demo


def timers_js(active: list[bool]) -> str:
    """A browser-side handler that switches the timers on and off (`active`, in the outputs' order)."""
    updates = ", ".join(f"{{__type__: 'update', active: {'true' if a else 'false'}}}" for a in active)
    return f"() => [{updates}]"


def _wire_across_tabs(ctx, tabs, train, queue, monitor, samples) -> None:
    import gradio as gr

    from studio.ui.jobs import get_job

    def clone_into_form(job_id):
        job = get_job(ctx.store, job_id)
        if job is None:
            return [gr.skip()] * len(train.load_outputs) + ["Select a job first.", gr.skip()]
        config = dict(job.config)
        config["job"] = {**config.get("job", {}), "name": "", "output_dir": ""}
        return [*train.load_updates(config, None),
                f"Loaded the settings of job #{job.id} {job.name}; edit them and queue the new job.",
                gr.Tabs(selected="train")]

    queue.clone_btn.click(clone_into_form, [queue.job], [*train.load_outputs, train.message, tabs],
                          show_progress_on=train.message)
    # The job the user picks in the Queue tab is the one Monitor and Samples show (set in the browser, no
    # request; each refreshes when opened). A pick the Queue's refresh makes by itself is not passed on:
    # Monitor and Samples make the same one on their own.
    follow = dict(fn=None, inputs=[queue.job], outputs=[monitor.job, samples.job],
                  js="(j) => (j === null || j === undefined || j === '') ? [undefined, undefined] : [j, j]")
    queue.job.input(**follow)
    queue.row_picked.then(**follow)


def launch(ctx, serving: dict, **extra):
    """Build, launch and (unless prevent_thread_lock) serve until stopped; returns the Blocks."""

    from starlette.middleware import Middleware

    from studio.ui.file_guard import guard_middleware
    from studio.ui.serving import PageCache, SmallLoginPage

    demo = build_app(ctx, serving)
    demo.queue(default_concurrency_limit=4)
    # The file guard always comes first (real paths before every allow/deny decision); the small sign-in
    # page and the compressed page cache unless a caller brings its own middleware.
    app_kwargs = extra.pop("app_kwargs", None) or {}
    app_kwargs["middleware"] = [*guard_middleware(ctx), *app_kwargs.get(
        "middleware", [Middleware(SmallLoginPage, message=AUTH_MESSAGE), Middleware(PageCache)])]
    extra["app_kwargs"] = app_kwargs
    block = not extra.pop("prevent_thread_lock", False)
    extra.setdefault("quiet", True)  # Gradio's own hints ("set share=True") are not the studio's way
    try:
        demo.launch(
            server_name=serving["server_name"], server_port=serving["port"], share=serving["share"],
            auth=serving["auth"], auth_message=AUTH_MESSAGE,
            allowed_paths=[str(p) for p in ctx.allowed_roots()], blocked_paths=[str(p) for p in ctx.blocked_paths()],
            max_file_size=serving["max_file_size"], enable_monitoring=False, show_error=True, ssr_mode=False,
            mcp_server=False, pwa=False, footer_links=["gradio", "settings"], theme=studio_theme(), css=CSS,
            prevent_thread_lock=True, **extra)
    except ValueError as err:
        # Gradio's self-check gives up after one 3 s request to the new server; on a busy machine the
        # first page can take longer. The server is up by then (only raised without share): keep serving.
        if "localhost is not accessible" not in str(err):
            raise
        print("note: the first request to the studio was slow (busy machine); it is serving anyway",
              file=sys.stderr)
    print(ready_line(demo, serving), flush=True)
    if block:
        demo.block_thread()
    return demo


def ready_line(demo, serving: dict) -> str:
    url = getattr(demo, "local_url", None) or f"http://{serving['server_name']}:{serving['port']}/"
    line = f"Training Studio is serving on {url}"
    if getattr(demo, "share_url", None):
        return line + f" and {demo.share_url} (password required)"
    if serving["server_name"] == LOCAL:
        line += " (this computer only; --listen or --share with --auth USER:PASS opens it to others)"
    return line


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # Gradio's serving loop ends on it; then the TensorBoards are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        serving = serving_options(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    # No network calls home (analytics, version check): the studio must start offline.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from pathlib import Path

    from studio.ui.context import StudioContext

    from studio.queue.store import QueueError

    try:
        ctx = StudioContext.create([Path(p).expanduser().resolve() for p in args.data_root])
    except QueueError as err:  # a damaged queue database: say so and how to restore it, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill`, docker stop, a Space restart: same clean exit
    if not args.no_worker:
        ctx.start_worker()
    try:
        launch(ctx, serving)
    finally:
        ctx.close()
    return 0
