"""Is this environment the tested one? Installed versions compared with the project's lock.

The lock (`requirements.txt`, generated from `requirements.in` by `scripts/relock.sh`) is the set of
versions the whole suite passed with. Three findings, cheapest first, none of which imports torch:

- error: a package outside the range `requirements.in` allows, or missing, or a combination in
  `KNOWN_BAD`; a job refuses to start (before any model is loaded) and the message names the fix.
  `STUDIO_ALLOW_UNTESTED=1` turns these into warnings for users who upgrade on purpose.
- warning: inside the range but not the locked version ("drifted"): it may work; it was not tested.
- ok.

torch is compared by its public version (2.13.0+cpu and 2.13.0 are the same release: the lock leaves
the build to the machine, see scripts/relock.sh).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = REPO_ROOT / "requirements.txt"
RANGES_FILE = REPO_ROOT / "requirements.in"
FIX = "pip install -r requirements.txt"


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    package: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def _requirement_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def direct_requirements() -> list[str]:
    """The names the studio asks for itself (`requirements.in`), in its order: what `studio env` lists."""
    from packaging.requirements import Requirement

    return [Requirement(line).name for line in _requirement_lines(RANGES_FILE)]


def _applies(req) -> bool:
    return req.marker is None or req.marker.evaluate()


def _installed(name: str) -> str | None:
    try:
        return distribution(name).version
    except PackageNotFoundError:
        return None


def _public(v: str) -> str:
    from packaging.version import Version

    return Version(v).public


def _torchvision_matches_torch() -> Finding | None:
    """A torchvision built for another torch breaks `import transformers` ('operator torchvision::nms
    does not exist'): read the torch it was built for from its own metadata, without importing it."""
    from packaging.requirements import Requirement

    tv = _installed("torchvision")
    torch_v = _installed("torch")
    if not tv or not torch_v:
        return None
    for spec in distribution("torchvision").requires or []:
        req = Requirement(spec)
        if req.name == "torch" and req.specifier and not req.specifier.contains(_public(torch_v), prereleases=True):
            return Finding("error", "torchvision",
                           f"torchvision {tv} was built for torch{req.specifier} but torch {torch_v} is installed; "
                           "transformers then fails to import. Fix: `pip uninstall torchvision` (the studio does "
                           "not need it) or install the torchvision built for your torch")
    return None


# Combinations known not to work, each a function returning a Finding or None. Add one when a
# release breaks the studio and the lock's ranges cannot express it.
KNOWN_BAD = (_torchvision_matches_torch,)


def check(lock: Path | None = None, ranges: Path | None = None) -> list[Finding]:
    """Every finding for this environment, errors first (default files: the repository's)."""
    from packaging.requirements import Requirement

    lock, ranges = lock or LOCK_FILE, ranges or RANGES_FILE
    findings: list[Finding] = []
    for line in _requirement_lines(ranges):
        req = Requirement(line)
        if not _applies(req):
            continue
        have = _installed(req.name)
        if have is None:
            findings.append(Finding("error", req.name, f"{req.name} is not installed; fix: `{FIX}`"))
        elif req.specifier and not req.specifier.contains(_public(have), prereleases=True):
            findings.append(Finding("error", req.name,
                                    f"{req.name} {have} is outside the supported range {req.specifier}; "
                                    f"fix: `{FIX}`"))
    bad = {f.package for f in findings}
    for line in _requirement_lines(lock):
        req = Requirement(line)
        if not _applies(req) or req.name in bad:
            continue
        pinned = next((s.version for s in req.specifier if s.operator == "=="), None)
        have = _installed(req.name)
        if pinned is None:
            continue
        if have is None:
            findings.append(Finding("warning", req.name, f"{req.name} {pinned} (locked) is not installed"))
        elif _public(have) != _public(pinned):
            findings.append(Finding("warning", req.name,
                                    f"{req.name} {have} is installed, the tested version is {pinned}"))
    for rule in KNOWN_BAD:
        found = rule()
        if found:
            findings.append(found)
    if not _requirement_lines(lock):
        findings.append(Finding("warning", "lock", f"no lock file at {lock}: versions not checked"))
    return sorted(findings, key=lambda f: (f.level != "error", f.package))


def allow_untested() -> bool:
    return os.environ.get("STUDIO_ALLOW_UNTESTED", "").strip().lower() in ("1", "true", "yes")


def summary(findings: list[Finding]) -> str:
    if not findings:
        return f"the installed packages are the tested set ({LOCK_FILE.name})"
    drift = sum(f.level == "warning" for f in findings)
    errors = sum(f.level == "error" for f in findings)
    parts = [f"{errors} error(s)"] if errors else []
    if drift:
        parts.append(f"{drift} package(s) differ from the tested set; to restore it: `{FIX}`")
    return "; ".join(parts)


def enforce() -> None:
    """At the start of a job: print each drift as a warning (stderr, so it lands in the job's console),
    and refuse to start on an error (unless the user allowed untested combinations), before any model
    is loaded."""
    import sys

    from studio.config.errors import ConfigError

    findings = check()
    errors = [f for f in findings if f.level == "error"]
    for f in findings:
        if f.level == "warning" or allow_untested():
            print(f"warning: environment: {f.message}", file=sys.stderr)
    if errors and not allow_untested():
        raise ConfigError([("environment", f"{f.message} (STUDIO_ALLOW_UNTESTED=1 starts anyway)")
                           for f in errors])
