"""The ``cryolab`` command line: one module per group of commands, all on the library's public API.

``main`` (entry point, ``info``), ``classify`` (``class2d``, ``class3d``, ``refine``, ``select``,
``report``), ``maps`` (``reconstruct``, ``postprocess``, ``project``, ``simulate``), ``demo``;
``common`` holds the argument types and the output-folder and provenance helpers.
"""
from .main import build_parser, main

__all__ = ["main", "build_parser"]
