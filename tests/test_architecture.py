"""The layout's rules, checked on the source: argparse only in hlens/cli, the organism only
through its plug-in point, models typed as hlens.Model, no submodule shadowed by a new name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import hlens

PKG = Path(hlens.__file__).resolve().parent
#: modules outside hlens/organism that may import it: none (hlens.registry names the plug-in by
#: string, in PLUGINS, and its command calls the plug-in through registry.plugin_action)
ORGANISM_IMPORTERS: set[str] = set()


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        yield path.relative_to(PKG).as_posix(), ast.parse(path.read_text())


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_argparse_only_under_cli():
    bad = [rel for rel, tree in _modules() if "argparse" in _imports(tree)]
    assert bad and all(rel.startswith("cli/") for rel in bad), bad


def test_core_modules_do_not_import_the_organism():
    bad = [
        rel
        for rel, tree in _modules()
        if not rel.startswith("organism/")
        and rel not in ORGANISM_IMPORTERS
        and any(m == "hlens.organism" or m.startswith("hlens.organism.") for m in _imports(tree))
    ]
    assert not bad, bad
    from hlens.registry import PLUGINS

    assert PLUGINS == ["hlens.organism.plugin"]


#: parameters whose hlens type exists (Model, PromptFormat, NeuronProbe, a suite judge)
TYPED = ("model", "m", "base", "tuned", "fmt", "probe", "judge")


def test_no_model_parameter_typed_any():
    bad = []
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for a in [*node.args.args, *node.args.kwonlyargs]:
                    ann = a.annotation
                    if a.arg in TYPED and isinstance(ann, ast.Name) and ann.id == "Any":
                        bad.append(f"{rel}:{node.lineno} {node.name}({a.arg})")
    assert not bad, bad


def test_commands_are_thin_modules_with_one_shape():
    import importlib

    from hlens.cli import COMMANDS

    for name, module in COMMANDS.items():
        mod = importlib.import_module(module)
        assert module.startswith("hlens.cli."), name
        assert isinstance(mod.HELP, str) and callable(mod.add_arguments) and callable(mod.run)


def test_no_attribute_shadows_its_own_submodule():
    """Every submodule ``hlens.a.b`` is what ``hlens.a.b`` names as an attribute: no function
    hides the module it lives in (``hlens.find`` is the function; its module is
    ``hlens.identify``, ``hlens.cett``'s is ``hlens.contribution``)."""
    import pkgutil
    import types

    for info in pkgutil.walk_packages(hlens.__path__, "hlens."):
        if info.name.startswith("hlens.organism.checkpoints") or info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        parent, _, leaf = info.name.rpartition(".")
        attr = getattr(importlib.import_module(parent), leaf)
        assert isinstance(attr, types.ModuleType) and attr is mod, info.name
    assert callable(hlens.find) and callable(hlens.cett)


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("hlens.find", "FindConfig", "hlens.identify"),
        ("hlens.cett", "cett_from_parts", "hlens.contribution"),
    ],
)
def test_moved_modules_import_under_their_old_paths_with_a_warning(old, name, new):
    """``from hlens.find import FindConfig`` works for one release and says where it went; the
    alias does not replace the function ``hlens.find``."""
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} is deprecated; use {new}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)
    assert callable(getattr(hlens, old.rpartition(".")[2]))
    assert not isinstance(getattr(hlens, old.rpartition(".")[2]), type(importlib))


def test_plugin_registrations_are_seen_from_a_fresh_process():
    """Asking a registry loads the plug-ins first: in a fresh interpreter the organism's source
    is known to find's column check before anything else touched the registries."""
    import subprocess
    import sys

    code = (
        "from hlens.identify import FindConfig\nfrom hlens.identify.stages import _file_columns\n"
        "cfg = FindConfig(model='organism', dataset='organism', strata_col='topic')\n"
        "try:\n    _file_columns(cfg)\nexcept ValueError as e:\n    print('refused:', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused: strata_col apply to JSONL/CSV datasets" in r.stdout, r.stdout + r.stderr
