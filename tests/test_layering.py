"""The lower layers import nothing above them: the replay exchange runs without the feed pod, the
operator or the lake, and the API models without anything that collects.

Every import statement counts, also those inside functions or under TYPE_CHECKING: a deferred
import is still a dependency. Each layer lists what it may use; since every layer listed there is
checked too, nothing above can come in transitively either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SVOE = Path(__file__).resolve().parents[1] / "svoe"

# Layer (a module or package of svoe) -> the svoe modules and packages it may import.
ALLOWED: dict[str, set[str]] = {
    "svoe.net": set(),
    "svoe.api": set(),
    "svoe.exchanges": set(),
    "svoe.replay": {"svoe.api", "svoe.exchanges", "svoe.net"},
    # The lake's reader stands beside the feed pod, not on it: layout and schema are the lake's,
    # and the pod's writers use them. Compaction rewrites blocks with the pod's local writer.
    "svoe.lake": {"svoe.api", "svoe.feedpod.lake_writer"},
    "svoe.feedpod.lake_writer": {"svoe.api", "svoe.lake"},
}


def _files(layer: str) -> list[Path]:
    path = SVOE.parent.joinpath(*layer.split("."))
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def _module_of(path: Path) -> str:
    parts = path.relative_to(SVOE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def svoe_imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """The svoe modules the source of `module` imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
        else:
            continue
        out.update(n for n in names if _within(n, "svoe"))
    return out


def _file_imports(path: Path) -> set[str]:
    return svoe_imports(path.read_text(), _module_of(path), path.name == "__init__.py")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    files = _files(layer)
    assert files and all(f.exists() for f in files), f"{layer} has no source under {SVOE}"
    may = {layer, *ALLOWED[layer]}
    wrong = {
        f"{f.relative_to(SVOE.parent)}: {name}"
        for f in files
        for name in _file_imports(f)
        if not any(_within(name, ok) for ok in may)
    }
    assert not wrong, f"{layer} may import only {sorted(may)}; found:\n" + "\n".join(sorted(wrong))


def test_the_import_walk_sees_deferred_and_relative_imports() -> None:
    # A check that finds nothing proves nothing unless it can find something.
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from svoe.lake import Lake\n"
        "def f():\n    import svoe.feedpod.collector\n    from ..operator import main\n    from . import capture\n"
        "import svoeish, json\n"
    )
    found = svoe_imports(src, "svoe.replay.probe")
    assert found == {"svoe.lake", "svoe.feedpod.collector", "svoe.operator", "svoe.replay"}
