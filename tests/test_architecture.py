"""The package's layers hold (import-linter contracts in pyproject.toml, drawn in
docs/architecture.md): no module imports a higher layer, and no package has an import cycle
between its modules. Also: no module is over the size a reader can hold (about 450 lines)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolkit" / "cryolab"
MAX_LINES = 470      # "no module over ~450 lines"


def test_import_contracts_are_kept(monkeypatch):
    cli = pytest.importorskip("importlinter.cli", reason="import-linter is a test extra")
    monkeypatch.chdir(ROOT)
    loggers = logging.root.manager.loggerDict
    disabled = {name: getattr(lg, "disabled", None) for name, lg in loggers.items()}
    try:
        assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0
    finally:   # the linter configures logging and disables the loggers that exist: undo that
        for name, lg in list(loggers.items()):
            if isinstance(lg, logging.Logger):
                lg.disabled = bool(disabled.get(name, False))


def test_no_module_is_too_long():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): {long}"


def test_engine_is_a_regular_package():
    """A namespace package is invisible to the import checker."""
    for folder in PACKAGE.rglob("*"):
        if folder.is_dir() and any(folder.glob("*.py")) and folder.name != "__pycache__":
            assert (folder / "__init__.py").exists(), f"{folder.relative_to(PACKAGE)} has no __init__.py"
