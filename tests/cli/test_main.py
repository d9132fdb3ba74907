"""The command line's contract (hlens.cli, hlens.errors) and "loading never runs code"."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hlens
from hlens.cli import main

ROOT = Path(hlens.__file__).resolve().parent
PICKLERS = {"pickle", "cPickle", "_pickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"}


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _offences(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
            found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
            kw = {k.arg: k.value for k in node.keywords}
            if name == "load" and owner == "torch" and not _is_true(kw.get("weights_only")):
                found.append((node.lineno, "torch.load without weights_only=True"))
            if name == "load" and owner in ("np", "numpy") and _is_true(kw.get("allow_pickle")):
                found.append((node.lineno, "np.load(allow_pickle=True)"))
            if _is_true(kw.get("trust_remote_code")):
                found.append((node.lineno, "trust_remote_code=True"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults) :], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg == "trust_remote_code" and _is_true(default):
                    found.append((node.lineno, f"{node.name}(trust_remote_code=True) by default"))
    return found


def test_loading_never_runs_code():
    """No pickle/joblib, torch.load only with weights_only=True, trust_remote_code off."""
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 20
    bad = [
        f"{p.relative_to(ROOT.parent)}:{line}: {what}"
        for p in files
        for line, what in _offences(ast.parse(p.read_text(), str(p)))
    ]
    assert not bad, "\n".join(bad)


def test_the_scan_finds_what_it_looks_for():
    src = (
        "import pickle\nfrom joblib import load\nimport torch\ntorch.load('x')\n"
        "torch.load('x', weights_only=True)\nf(trust_remote_code=True)\n"
        "def g(trust_remote_code=True): pass\n"
    )
    assert sorted(line for line, _ in _offences(ast.parse(src))) == [1, 2, 4, 6, 7]


def test_load_keeps_trust_remote_code_off_by_default():
    import inspect

    assert inspect.signature(hlens.load).parameters["trust_remote_code"].default is False


def test_help_and_version_exit_0(capsys):
    assert main([]) == 0
    assert main(["--version"]) == 0
    assert "hlens" in capsys.readouterr().out


def test_hlens_debug_env_shows_the_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HLENS_DEBUG", "1")
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("hlens report: error: run directory")


@pytest.mark.parametrize("value", ["", "0"])
def test_hlens_debug_off(capsys, monkeypatch, tmp_path, value):
    monkeypatch.setenv("HLENS_DEBUG", value)
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_missing_package_is_a_user_error(capsys, monkeypatch):
    import hlens.cli.report as report

    def needs_a_package(args):
        raise ModuleNotFoundError("No module named 'plotly'", name="plotly")

    monkeypatch.setattr(report, "run", needs_a_package)
    assert main(["report", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "hlens report: error: this needs the package 'plotly', which is not installed; "
        "install it (pip install plotly) and rerun"
    ]


def test_missing_hlens_module_is_a_bug(monkeypatch):
    import hlens.cli.report as report

    def broken(args):
        raise ModuleNotFoundError("No module named 'hlens.nothing'", name="hlens.nothing")

    monkeypatch.setattr(report, "run", broken)
    with pytest.raises(ModuleNotFoundError):
        main(["report", "x"])
