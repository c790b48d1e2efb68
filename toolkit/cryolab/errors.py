"""Errors raised for bad user input.

Every error about a user's file names the file and, where there is one, the
field (STAR label, MRC header field) that is wrong, so the CLI can print a
one-line message without a traceback.
"""
from __future__ import annotations


class CryolabInputError(ValueError):
    """Bad input from the user: a file, a STAR field, a parameter value.

    ``str(err)`` is a complete one-line message, e.g.
    ``particles.star: field _rlnDefocusU: value 'abc' in row 3 is not a number``.
    """

    def __init__(self, message: str, *, path=None, field: str | None = None):
        parts = []
        if path is not None:
            parts.append(str(path))
        if field is not None:
            parts.append(f"field {field}")
        parts.append(message)
        super().__init__(": ".join(parts))
        self.path = None if path is None else str(path)
        self.field = field
