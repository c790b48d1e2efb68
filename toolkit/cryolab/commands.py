"""Processing sub-commands of the ``cryolab`` CLI (one small function per command)."""
from __future__ import annotations


def _cmd_demo(args) -> int:
    print("cryolab demo: not yet available in this version")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the lecture's workflow on the embedded dataset")
    p.set_defaults(func=_cmd_demo)
