"""The ``cryolab`` command line.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (one-line
message on stderr, no traceback, no partial output). ``CRYOLAB_DEBUG=1`` shows
the traceback of a runtime failure. Command reference: ``docs/cli.md``.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys

from .. import __version__
from ..errors import CryolabInputError
from . import classify, common, demo, focus, initial_model, maps, msa, multibody, picking, variability, variance


def _cmd_info(args) -> int:
    import numpy
    import scipy

    from ..backend import BACKEND_VARIABLE, cupy_status, resolve_backend
    lines = [
        f"cryolab   {__version__}",
        f"python    {platform.python_version()}",
        f"numpy     {numpy.__version__}",
        f"scipy     {scipy.__version__}",
    ]
    for mod in ("mrcfile", "starfile", "matplotlib", "ipywidgets", "cupy", "dask", "gemmi"):
        try:
            m = __import__(mod)
            lines.append(f"{mod:<9} {getattr(m, '__version__', '?')}")
        except Exception:
            lines.append(f"{mod:<9} not installed")
    why = cupy_status()
    lines.append(f"GPU       {'available (cupy)' if why is None else 'not available: ' + why}")
    relion = shutil.which("relion_refine")
    lines.append(f"relion    {relion or 'not on PATH'}")
    try:
        backend = resolve_backend(None).__name__
    except Exception as exc:
        backend = f"unusable: {exc}"
    lines.append(f"backend   {backend} ({BACKEND_VARIABLE}={os.environ.get(BACKEND_VARIABLE, '')!r})")
    print("\n".join(lines))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (and exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cryolab", description="cryolab: single-particle cryo-EM analysis with "
                     "RELION conventions. Exit codes: 0 success, 1 failure, 2 bad usage or input.")
    parser.add_argument("--version", action="version", version=f"cryolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, array backend, GPU and RELION availability")
    p.set_defaults(func=_cmd_info)
    classify.register(sub)
    maps.register(sub)
    focus.register(sub)
    variance.register(sub)
    msa.register(sub)
    picking.register(sub)
    multibody.register(sub)
    variability.register(sub)
    initial_model.register(sub)
    demo.register(sub)
    return parser


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _set_threads(n):
    """Limit BLAS/OpenMP threads (through the environment before numpy is loaded, and through
    threadpoolctl after: :func:`cryolab.engine.threads.use_cores`, which also bounds the E-step's
    worker processes) and FFT workers; returns the function that puts them back as they were."""
    before_env = {v: os.environ.get(v) for v in _THREAD_VARIABLES}
    if n:
        for var in _THREAD_VARIABLES:
            os.environ[var] = str(n)
    from .. import backend
    from ..engine.threads import use_cores
    before_fft = backend._CPU_THREADS
    restore_cores = None
    if n:
        backend.set_cpu_threads(n)
        restore_cores = use_cores(n)

    def restore():
        for var, value in before_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        backend._CPU_THREADS = before_fft
        if restore_cores is not None:
            restore_cores()
    return restore


class _Stderr(logging.Handler):
    """One line per message on the current ``sys.stderr``."""

    def emit(self, record):
        print(self.format(record), file=sys.stderr, flush=True)


def _set_logging(args):
    """Warnings and notes of the library to stderr, one line each, while the command runs:
    ``--quiet`` only errors, ``--verbose`` also progress messages (INFO). Returns the function
    that puts the logger back as it was."""
    level = (logging.ERROR if getattr(args, "quiet", False) else
             logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    root = logging.getLogger("cryolab")
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(f"cryolab {args.command}: %(levelname)s: %(message)s"))
    before = (root.level, root.propagate)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False

    def restore():
        root.removeHandler(handler)
        root.setLevel(before[0])
        root.propagate = before[1]
    return restore


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (2)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.argv = argv
    common.forget_created()
    restore_threads = _set_threads(getattr(args, "j", None))
    restore_logging = _set_logging(args)
    try:
        return int(args.func(args) or 0)
    except (CryolabInputError, FileNotFoundError, IsADirectoryError) as err:
        common.remove_created()
        msg = " ".join(str(err).split())
        print(f"cryolab {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception as err:  # runtime failure: one line, traceback only when debugging
        if os.environ.get("CRYOLAB_DEBUG"):
            raise
        print(f"cryolab {args.command}: failed: {type(err).__name__}: {err}".splitlines()[0],
              file=sys.stderr)
        return 1
    finally:
        restore_logging()
        restore_threads()


if __name__ == "__main__":
    raise SystemExit(main())
