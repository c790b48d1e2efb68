"""The ``cryolab`` command line.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (one-line
message on stderr, no traceback, no partial output).
"""
from __future__ import annotations

import argparse
import platform
import shutil
import sys

from . import __version__
from .errors import CryolabInputError


def _cmd_info(args) -> int:
    import numpy
    import scipy

    from .backend import cupy_available
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
    lines.append(f"GPU       {'available (cupy)' if cupy_available() else 'not available'}")
    relion = shutil.which("relion_refine")
    lines.append(f"relion    {relion or 'not on PATH'}")
    import os
    lines.append(f"backend   {os.environ.get('CRYOLAB_BACKEND', 'numpy')}")
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryolab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cryolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="versions, array backend, GPU and RELION availability")
    p.set_defaults(func=_cmd_info)
    from . import commands  # registers the processing commands
    commands.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CryolabInputError as err:
        print(f"cryolab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
