"""Small file helpers shared by the readers and writers: atomic writes, existence checks,
and the paths of image stacks as STAR files name them."""
from __future__ import annotations

import contextlib
import logging
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


def project_path(path) -> str:
    """``path`` as a STAR file's ``_rlnImageName`` should name it.

    RELION resolves image paths against its working folder (the project folder), so a file
    inside the working folder is named relative to it (``Simulate/job001/particles.mrcs``;
    symbolic links inside the folder are kept) and any other file by its absolute path.
    """
    path = Path(os.path.abspath(path))
    cwd = Path(os.getcwd())
    for p, base in ((path, cwd), (path.resolve(), cwd.resolve())):
        if p.is_relative_to(base):
            return p.relative_to(base).as_posix()
    return path.as_posix()


def locate_stack(name: str, star_path) -> Path | None:
    """The file a relative stack name of a STAR file means, or None if there is none.

    Looked for, in this order: in the STAR file's folder (how older cryolab files name
    stacks), in the working folder (how RELION and cryolab name them), then in each folder
    above the STAR file's (the project folder when the working folder is elsewhere). When the
    first two both hold a file of that name and they differ, the first is used and a
    warning on the ``cryolab.io`` logger names both. Returns an absolute path (links kept).
    """
    p = Path(name)
    if p.is_absolute():
        return p if p.is_file() else None
    star_dir = Path(os.path.abspath(Path(star_path).parent))
    beside, in_cwd = star_dir / p, Path(os.getcwd()) / p
    if beside.is_file():
        if in_cwd != beside and in_cwd.is_file() and not os.path.samefile(in_cwd, beside):
            logging.getLogger("cryolab.io").warning(
                "%s: stack %r exists both beside the STAR file (%s, used) and in the working "
                "folder (%s, which RELION would read)", star_path, name, beside, in_cwd)
        return beside
    if in_cwd.is_file():
        return in_cwd
    for folder in star_dir.parents:
        if (folder / p).is_file():
            return folder / p
    return None
