"""Provenance of a run: ``run.json`` with everything needed to reproduce it.

A :class:`RunRecord` collects the cryolab version, the full parameters, the seed, sha256
checksums of the input files, the array backend, host, Python/numpy versions, timings
(per iteration and per step) and the exact command line; :meth:`RunRecord.write` saves it
as JSON next to the outputs::

    rec = RunRecord("class2d", params={"K": 4, "seed": 0}, inputs=["particles.star"])
    rec.add_iteration(1, 12.3)
    rec.write("out/run.json")

File naming: a run that owns a folder writes ``run.json`` there; a run whose output is one
file ``NAME.ext`` (or a prefix ``NAME`` other than ``run``) writes ``NAME_run.json`` beside it
(:func:`provenance_path`).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from . import __version__
from .io._files import atomic_path

__all__ = ["RunRecord", "sha256_file", "provenance_path", "read_run", "command_line", "environment"]


def environment() -> dict:
    """cryolab's version and git commit, Python and numpy versions, every dependency's version, host and platform."""
    import numpy
    return {"cryolab_version": __version__, "git_commit": git_commit(), "host": platform.node(),
            "platform": platform.platform(), "python": platform.python_version(), "numpy": numpy.__version__,
            "dependencies": dependency_versions()}


def dependency_versions() -> dict:
    """``{name: version}`` of cryolab's required packages (``"missing"`` when one is not installed)."""
    import re
    from importlib import metadata
    try:
        required = metadata.requires("cryolab") or []
    except metadata.PackageNotFoundError:
        return {}
    out = {}
    for req in required:
        if "extra ==" in req:
            continue
        name = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def git_commit() -> str:
    """The git commit of the cryolab source (with ``+modified`` when its files differ from it);
    ``""`` when cryolab is not run from a git checkout or git is not installed."""
    import subprocess
    here = Path(__file__).resolve().parent
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(here), *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=10, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        modified = run("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+modified" if modified else "")


def sha256_file(path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            h.update(block)
    return h.hexdigest()


def provenance_path(folder, stem: str = "run") -> Path:
    """``folder/run.json`` for stem ``run``, else ``folder/<stem>_run.json``."""
    name = "run.json" if stem == "run" else f"{stem}_run.json"
    return Path(folder) / name


def command_line(argv=None) -> str:
    """The command as typed: ``cryolab`` followed by the (shell-quoted) arguments."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["cryolab", *map(str, args)])


def _jsonable(value):
    """Parameters as JSON values (paths as strings, numpy scalars as numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class RunRecord:
    """What a run did and with what; ``to_dict()`` is the content of ``run.json``."""

    def __init__(self, command: str, params: dict | None = None, inputs=(), argv=None,
                 seed: int | None = None, backend: str = "numpy"):
        self.command = command
        self.params = dict(params or {})
        self.seed = seed
        self.backend = backend
        self.command_line = command_line(argv)
        self.cwd = os.getcwd()
        self.started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        self._t0 = time.perf_counter()
        self.inputs = {}
        for path in inputs:
            self.add_input(path)
        self.iterations: list[dict] = []
        self.steps: dict[str, float] = {}
        self.outputs: list[str] = []
        self.results: dict = {}

    def add_input(self, path) -> None:
        """Record an input file and its sha256 (skipped if it is not a file)."""
        p = Path(path)
        if p.is_file():
            rel = os.path.relpath(p.resolve(), self.cwd)
            self.inputs[str(path) if p.is_absolute() and rel.startswith("..") else rel] = sha256_file(p)

    def add_iteration(self, iteration: int, time_s: float, **values) -> None:
        """Time (seconds) and any summary values of one iteration."""
        self.iterations.append({"iteration": int(iteration), "time_s": float(time_s),
                                **_jsonable(values)})

    def timed(self, step: str):
        """Context manager adding the wall time of a named step to ``steps`` (seconds)."""
        record = self

        class _Timer:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                record.steps[step] = record.steps.get(step, 0.0) + time.perf_counter() - self.t0
                return False
        return _Timer()

    def to_dict(self) -> dict:
        env = environment()
        return {
            "cryolab_version": env.pop("cryolab_version"),
            "command": self.command,
            "command_line": self.command_line,
            "cwd": self.cwd,
            "parameters": _jsonable(self.params),
            "seed": self.seed,
            "inputs_sha256": self.inputs,
            "backend": self.backend,
            **env,
            "started": self.started,
            "wall_time_s": round(time.perf_counter() - self._t0, 3),
            "iterations": self.iterations,
            "steps_s": {k: round(v, 3) for k, v in self.steps.items()},
            "outputs": self.outputs,
            "results": _jsonable(self.results),
        }

    def write(self, path) -> Path:
        """Write the record as indented JSON (atomically); returns the path."""
        path = Path(path)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=1))
            os.chmod(tmp, 0o644)
        return path


def read_run(path) -> dict:
    """Read a ``run.json`` (a file, or a folder holding ``run.json`` / one ``*_run.json``)."""
    p = Path(path)
    if p.is_dir():
        found = [p / "run.json"] if (p / "run.json").is_file() else sorted(p.glob("*_run.json"))
        if not found:
            return {}
        p = found[0]
    return json.loads(p.read_text())
