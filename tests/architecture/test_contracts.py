"""Guards of the family contract, read from the source: outside studio/families, no code compares a
family id with a literal or probes a family or a dataset with `hasattr`/`getattr` (every hook is
declared on ModelFamily / TrainingData)."""
from __future__ import annotations

import ast
from pathlib import Path

from studio.registry.families import ALL_FAMILIES

ROOT = Path(__file__).resolve().parents[2]
# The rule modules of one family's settings (they check that family's own combinations).
FAMILY_RULES = ("studio/config/sections/llm.py", "studio/config/sections/music.py", "studio/config/sections/flow.py")


def _outside_families():
    for path in sorted((ROOT / "studio").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(("studio/families/", "studio/registry/")) and rel not in FAMILY_RULES:
            yield rel, ast.parse(path.read_text(encoding="utf-8"))


def family_branches(tree: ast.AST) -> list[str]:
    """Comparisons of something named `*family*` with a registered family id."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            literals = {c.value for side in sides for c in ast.walk(side) if isinstance(c, ast.Constant)}
            if any("family" in ast.unparse(side) for side in sides) and literals & set(ALL_FAMILIES):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def probes(tree: ast.AST) -> list[str]:
    """`hasattr` / `getattr` on something named like a family or a dataset."""
    return [f"{node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
            and node.args and any(w in ast.unparse(node.args[0]) for w in ("family", "dataset", "_ds"))]


def test_no_code_outside_families_branches_on_a_family_id():
    assert [f"{rel}:{hit}" for rel, tree in _outside_families() for hit in family_branches(tree)] == []


def test_no_hasattr_probing_of_families_or_datasets():
    assert [f"{rel}:{hit}" for rel, tree in _outside_families() for hit in probes(tree)] == []


def test_the_guards_see_a_violation():
    tree = ast.parse('if cfg.model.family == "acestep" and hasattr(t.family, "encode_song"):\n'
                     '    n = getattr(train_ds, "fingerprint", None)')
    assert len(family_branches(tree)) == 1 and len(probes(tree)) == 2
