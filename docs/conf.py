"""Sphinx configuration of the cryolab documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Pages are MyST markdown; the API reference is generated from the docstrings
(autodoc + napoleon + autosummary). The course notebooks in ``notebooks/`` are
rendered without executing them (myst-nb, ``nb_execution_mode = "off"``): they
are copied into ``docs/_tutorials/`` (ignored by git) when the build starts,
because Sphinx only reads files below its source folder.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "toolkit"))     # the package, also when it is not installed

project = "cryolab"
author = "the cryolab authors"
copyright = "cryolab authors, BSD-3-Clause"
try:
    from cryolab import __version__ as release
except Exception:  # pragma: no cover - docs of a broken install still build the prose
    release = "0.1"
version = release

try:                                           # myst-nb renders the notebooks; without it,
    import myst_nb  # noqa: F401               # myst-parser alone builds everything else
    HAVE_MYST_NB = True
except ImportError:
    HAVE_MYST_NB = False

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb" if HAVE_MYST_NB else "myst_parser",
]

source_suffix = {".md": "myst-nb" if HAVE_MYST_NB else "markdown", ".rst": "restructuredtext"}
if HAVE_MYST_NB:
    source_suffix[".ipynb"] = "myst-nb"
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# ----------------------------------------------------------------- MyST
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"          # notebooks are committed without outputs; never run them here
nb_merge_streams = True

# ----------------------------------------------------------------- API reference
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_mock_imports = ["cupy", "cupyx", "nglview", "dask", "distributed", "gemmi"]
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# Docstrings are written for readers of the source (``code`` spans, plain-text formulas) and
# name types that are not documented here (``np.ndarray``, CuPy arrays), so unresolved
# Python cross-references in them are not errors. Links between pages, to headings and to
# documents are checked: a broken one fails the build under ``-W``.
nitpicky = False
suppress_warnings = [
    "ref.python",                # "more than one target found" for names re-exported by packages
    "myst.header",               # a page may start at a deeper heading level
]

# ----------------------------------------------------------------- HTML
html_theme = "alabaster"
html_title = f"cryolab {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Single-particle cryo-EM in Jupyter",
    "fixed_sidebar": False,
}


# ----------------------------------------------------------------- notebooks
def _notebook_title(path: Path) -> str:
    import json
    for cell in json.loads(path.read_text(encoding="utf-8")).get("cells", []):
        text = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "markdown" and text.lstrip().startswith("# "):
            return text.lstrip()[2:].splitlines()[0].strip()
    return path.stem


def _copy_notebooks(app, config):
    """Mirror ``notebooks/*.ipynb`` into ``docs/_tutorials`` (only files that changed).

    Without myst-nb each notebook gets a short markdown page pointing at the file instead.
    """
    src, dst = ROOT / "notebooks", DOCS / "_tutorials"
    if not src.is_dir():
        return
    dst.mkdir(exist_ok=True)
    suffix = ".ipynb" if HAVE_MYST_NB else ".md"
    wanted = {p.stem: p for p in src.glob("[0-9]*.ipynb")}
    for p in dst.iterdir():
        if p.is_file() and (p.stem not in wanted or p.suffix != suffix):
            p.unlink()
    for stem, nb in sorted(wanted.items()):
        target = dst / (stem + suffix)
        data = (nb.read_bytes() if HAVE_MYST_NB else
                f"# {_notebook_title(nb)}\n\nOpen `notebooks/{nb.name}` in JupyterLab.\n".encode())
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)


def _skip_private(app, what, name, obj, skip, options):
    """Document public names only (a module's ``__all__`` already decides for modules)."""
    if name.startswith("_") and name not in ("__call__", "__len__", "__getitem__"):
        return True
    return skip


def setup(app):
    app.connect("config-inited", _copy_notebooks)
    app.connect("autodoc-skip-member", _skip_private)
