"""The Environment panel: package versions, devices, free disk (the `studio env` check), and how
this studio is served (address, password, the folders the browser may read)."""
from __future__ import annotations

import gradio as gr

from studio.ui.context import StudioContext


def environment_markdown() -> str:
    from studio.envcheck import environment  # imports torch: only when asked

    info = environment()
    rows = "\n".join(f"| {name} | {version or '**missing**'} |" for name, version in info["packages"].items())
    devices = "\n".join(f"- {d.get('name')}" + (f" ({d['memory_gb']} GB)" if "memory_gb" in d else "")
                        for d in info["devices"]) or "- CPU only"
    warnings = "\n".join(f"- ⚠ {w}" for w in info["warnings"]) or "- none"
    lock = info["lock"]
    findings = "\n".join(f"- {'⛔' if f['level'] == 'error' else '⚠'} {f['message']}" for f in lock["findings"])
    lock_md = f"**Lock check** (`{lock['file']}`): {lock['summary']}\n\n{findings}\n\n"
    return (f"{lock_md}**Devices**\n\n{devices}\n\n**Studio home** `{info['studio_home']}` · "
            f"**free disk** {info['free_disk_gb']} GB\n\n**Warnings**\n\n{warnings}\n\n"
            f"| package | version |\n|---|---|\n{rows}")


def serving_markdown(ctx: StudioContext, serving: dict) -> str:
    roots = "\n".join(f"- `{p}`" for p in ctx.allowed_roots())
    auth = "on" if serving.get("auth") else "off (local only)"
    return (f"**Address** `{serving.get('server_name', '127.0.0.1')}:{serving.get('port', '?')}` · "
            f"**password** {auth} · **share link** {'on' if serving.get('share') else 'off'} · "
            f"**queue** {ctx.worker_state()}\n\n**The browser may read files only from**\n\n{roots}\n\n"
            f"(the queue database and credential files are blocked even there)")


def build_environment_tab(ctx: StudioContext, serving: dict) -> None:
    gr.Markdown(serving_markdown(ctx, serving), elem_id="env-serving")
    check_btn = gr.Button("Run the environment check", variant="primary", elem_id="env-check")
    report = gr.Markdown("Press the button to compare the installed versions with the lock and list "
                         "devices and free disk (the same as `python -m studio env`).", elem_id="env-report")
    check_btn.click(environment_markdown, None, report)
