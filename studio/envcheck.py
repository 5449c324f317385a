"""`python -m studio env`: versions, devices and free disk, so a user can see at once what is missing."""
from __future__ import annotations

import shutil
from importlib.metadata import PackageNotFoundError, version

def environment() -> dict:
    import torch

    from studio.paths import studio_home

    from studio.lockcheck import LOCK_FILE, check, direct_requirements, summary

    info: dict = {"packages": {}, "devices": [], "warnings": []}
    findings = check()
    info["lock"] = {"file": str(LOCK_FILE), "summary": summary(findings),
                    "findings": [{"level": f.level, "package": f.package, "message": f.message} for f in findings]}
    for name in direct_requirements():
        try:
            info["packages"][name] = version(name)
        except PackageNotFoundError:
            info["packages"][name] = None
            info["warnings"].append(f"{name} is not installed")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["devices"].append({"id": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
                                    "bf16": torch.cuda.is_bf16_supported()})
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        info["devices"].append({"id": 0, "name": "Apple MPS"})
    else:
        info["warnings"].append("no GPU found: training runs on the CPU (fine for the tiny demo, slow for real models)")
    home = studio_home()
    usage = shutil.disk_usage(home)
    info["studio_home"] = str(home)
    info["free_disk_gb"] = round(usage.free / 2**30, 1)
    if usage.free < 5 * 2**30:
        info["warnings"].append(f"less than 5 GB free in {home}: checkpoints may fail")
    return info


def format_environment(info: dict) -> str:
    lines = ["Packages:"] + [f"  {k:16s} {v or 'MISSING'}" for k, v in info["packages"].items()]
    lock = info["lock"]
    lines.append(f"Lock check ({lock['file']}): {lock['summary']}")
    lines += [f"  {f['level']}: {f['message']}" for f in lock["findings"]]
    lines.append("Devices:")
    lines += [f"  {d}" for d in info["devices"]] or ["  CPU only"]
    lines.append(f"Studio home: {info['studio_home']} ({info['free_disk_gb']} GB free)")
    lines += [f"Warning: {w}" for w in info["warnings"]]
    return "\n".join(lines)


def print_env() -> int:
    info = environment()
    print(format_environment(info))
    return 0
