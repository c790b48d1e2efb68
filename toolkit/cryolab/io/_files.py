"""Small file helpers shared by the readers and writers: atomic writes, existence checks."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import CryolabInputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary file lives in the same folder (so ``os.replace`` is atomic) and
    is removed if the body raises, so a failed write leaves no partial output::

        with atomic_path("out.star") as tmp:
            tmp.write_text("data_\\n")
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CryolabInputError("the folder to write into does not exist", path=path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())      # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def require_file(path, what: str = "file") -> Path:
    """Return ``Path(path)`` or raise ``CryolabInputError`` if it is not an existing file."""
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CryolabInputError(f"{what} {reason}", path=path)
    return path
