"""Every setting acts: each field of the schema is read by code outside `studio/config` and `studio/ui`
(which only declare, check and show settings). Read from the source with `ast`; a field counts as read
where a module outside config/ui has

- `<anything>.<section>.<field>` (`cfg.training.seed`, `self.cfg.data.resolution`);
- `<name>.<field>` where `name` is bound to `<anything>.<section>` in that module (`a = cfg.adapter`),
  bears the section's name (`data.resolution`), or is a known parameter (`SECTION_PARAMS`);
- `<name>.get("<field>")` with such a name, or a string `"<field>"` in a module that also says
  `"<section>"` (the queue reads stored config dicts);

and where it calls a helper of `studio/config` (`music_settings(cfg)`, `cfg.data.all_resolutions()`)
whose body reads the field that way (helpers calling helpers included).
"""
from __future__ import annotations

import ast
from pathlib import Path

from studio.config.schema import SECTIONS, JobConfig

ROOT = Path(__file__).resolve().parents[2]
DECLARING = ("studio/config/", "studio/ui/")

# Sections handed to functions under a parameter name that is not the section's: (module, name) -> section.
SECTION_PARAMS = {("studio/adapters/peft_backend.py", "a"): "adapter",
                  ("studio/adapters/lycoris_backend.py", "a"): "adapter",
                  ("studio/train/evaluate.py", "cfg_eval"): "evaluation"}

# Settings that need no reader outside config/ui, each with its reason. Keep this list short.
ALLOWED_UNREAD: dict[str, str] = {}


def _bindings(tree: ast.AST, rel: str) -> dict[str, str]:
    """Names bound to a section in this module: `a = cfg.adapter`, `name, opt = ..., cfg.optimizer`."""
    out = {name: section for (mod, name), section in SECTION_PARAMS.items() if mod == rel}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = (zip(target.elts, node.value.elts) if isinstance(target, ast.Tuple)
                     and isinstance(node.value, ast.Tuple) else [(target, node.value)])
            for name, value in pairs:
                if isinstance(name, ast.Name) and isinstance(value, ast.Attribute) and value.attr in SECTIONS:
                    out[name.id] = value.attr
    return out


def _reads(tree: ast.AST, rel: str, section_of_self: str | None = None) -> set[str]:
    """`section.field` paths read in `tree` (`self.<field>` too inside a section's own methods)."""
    bound = _bindings(tree, rel)
    if section_of_self:
        bound["self"] = section_of_self
    found: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name) and node.args and isinstance(node.args[0], ast.Constant)):
            section = bound.get(node.func.value.id, node.func.value.id)  # a stored dict: `distributed.get("x")`
            if section in SECTIONS:
                found.add(f"{section}.{node.args[0].value}")
        if isinstance(node, ast.Attribute):
            owner = node.value
            if isinstance(owner, ast.Attribute) and owner.attr in SECTIONS:
                found.add(f"{owner.attr}.{node.attr}")
            elif isinstance(owner, ast.Name) and owner.id in bound:
                found.add(f"{bound[owner.id]}.{node.attr}")
            elif isinstance(owner, ast.Name) and owner.id in SECTIONS:
                found.add(f"{owner.id}.{node.attr}")
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for section in set(SECTIONS) & strings:
        found.update(f"{section}.{s}" for s in strings)
    return found


def _names_used(tree: ast.AST) -> set[str]:
    return ({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)})


def _config_helpers() -> dict[str, tuple[set[str], set[str]]]:
    """Functions and section methods of studio/config: name -> (fields they read, names they use)."""
    sections = {JobConfig.model_fields[s].annotation.__name__: s for s in SECTIONS}
    helpers: dict[str, tuple[set[str], set[str]]] = {}
    for path in sorted((ROOT / "studio" / "config").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef):
                helpers[node.name] = (_reads(node, rel), _names_used(node))
            elif isinstance(node, ast.ClassDef) and node.name in sections:
                for method in (m for m in node.body if isinstance(m, ast.FunctionDef) and m.name != "problems"):
                    helpers[method.name] = (_reads(method, rel, sections[node.name]), _names_used(method))
    return helpers


def read_settings() -> set[str]:
    """`section.field` paths that some module outside config/ui reads, itself or through a config helper."""
    found: set[str] = set()
    used: set[str] = set()
    for path in sorted((ROOT / "studio").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(DECLARING):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found |= _reads(tree, rel)
            used |= _names_used(tree)
    helpers = _config_helpers()
    called = {name for name in helpers if name in used}
    while True:  # helpers that the called helpers call
        more = {name for name in helpers if name not in called and any(name in helpers[c][1] for c in called)}
        if not more:
            break
        called |= more
    for name in called:
        found |= helpers[name][0]
    return found


def all_settings() -> list[str]:
    return [f"{section}.{name}" for section in SECTIONS
            for name in JobConfig.model_fields[section].annotation.model_fields]


def test_every_setting_is_read_outside_config_and_ui():
    read = read_settings()
    unread = [path for path in all_settings() if path not in read and path not in ALLOWED_UNREAD]
    assert unread == [], f"settings no code acts on: {unread}"


def test_the_walk_sees_a_dead_setting():
    """The walk itself: a field nobody reads is reported (a test that cannot fail would be worth nothing)."""
    read = read_settings()
    assert "training.no_such_setting" not in read
    assert {"training.seed", "adapter.rank", "data.resolutions"} <= read
