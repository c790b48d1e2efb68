"""MRC maps and image stacks (``.mrc`` volumes, ``.mrcs`` stacks of images along z).

Arrays are indexed ``[z, y, x]`` (volumes) or ``[image, y, x]`` (stacks);
the pixel size is ``cella.x / mx`` in Angstrom. Modes 0 (int8), 1 (int16),
2 (float32), 6 (uint16) and 12 (float16) are read, always returned as float32::

    vol, pixel_size_A = read_mrc("map.mrc")          # float32 [z, y, x], 5.0
    write_mrc("stack.mrcs", images, pixel_size_A=1.4)
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import mrcfile.utils
import numpy as np

from ..errors import CryolabInputError
from ._files import atomic_path, require_file

__all__ = ["read_mrc", "write_mrc", "mrc_header_info", "open_mrc_data", "check_finite",
           "SUPPORTED_MODES"]

SUPPORTED_MODES = (0, 1, 2, 6, 12)
HEADER_BYTES = 1024


def mrc_header_info(path) -> dict:
    """Header facts, checked against the file: shape, mode, dtype, pixel size, stack or volume.

    Returns ``{"shape": (nz, ny, nx), "mode", "dtype", "pixel_size_A" (None if
    unset), "voxel_size_A": (x, y, z), "origin_A": (x, y, z), "is_stack" (a
    ``.mrcs`` name, or space group 0 with ``mz == 1``), "data_offset", "nbytes"}``. Raises ``CryolabInputError`` for a missing,
    truncated or non-MRC file and for unsupported modes.
    """
    path = require_file(path, "MRC file")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise CryolabInputError(f"not an MRC file: {size} bytes is shorter than the "
                                f"{HEADER_BYTES}-byte header", path=path, field="header")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                h = mrc.header.copy()
                voxel = mrc.voxel_size.copy()
    except (ValueError, OSError) as exc:
        raise CryolabInputError(f"not a readable MRC file ({exc})", path=path,
                                field="header") from None
    mode = int(h.mode)
    if mode not in SUPPORTED_MODES:
        raise CryolabInputError(
            f"unsupported mode {mode} (readable: {', '.join(map(str, SUPPORTED_MODES))})",
            path=path, field="mode")
    shape = (int(h.nz), int(h.ny), int(h.nx))
    if min(shape) < 1:
        raise CryolabInputError(f"bad dimensions nx={shape[2]} ny={shape[1]} nz={shape[0]}",
                                path=path, field="nx/ny/nz")
    dtype = mrcfile.utils.data_dtype_from_header(h)
    offset = HEADER_BYTES + int(h.nsymbt)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if size - offset < nbytes:
        raise CryolabInputError(
            f"truncated file: header (nx={shape[2]}, ny={shape[1]}, nz={shape[0]}, mode {mode}) "
            f"needs {nbytes} bytes of data but the file holds {max(size - offset, 0)}",
            path=path, field="data")
    px = float(voxel.x)
    return {
        "shape": shape, "mode": mode, "dtype": dtype,
        "pixel_size_A": px if px > 0 else None,
        "voxel_size_A": (px, float(voxel.y), float(voxel.z)),
        "origin_A": (float(h.origin.x), float(h.origin.y), float(h.origin.z)),
        "is_stack": path.suffix == ".mrcs" or (int(h.ispg) == 0 and shape[0] > 1 and int(h.mz) == 1),
        "data_offset": offset, "nbytes": nbytes,
    }


def open_mrc_data(path, info: dict | None = None) -> np.ndarray:
    """Read-only memory map of the data block, shape ``[nz, ny, nx]`` in the file's dtype."""
    info = mrc_header_info(path) if info is None else info
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
            data = mrc.data  # stays valid (read-only) after the file object closes
    if data is None:
        raise CryolabInputError("could not map the data block", path=path, field="data")
    return data.reshape(info["shape"])


def check_finite(data: np.ndarray, path, describe=None) -> None:
    """Raise ``CryolabInputError`` naming the first image of ``data`` [B, ...] with NaN/inf pixels.

    ``describe(i)`` (optional) says how to refer to image ``i`` in the message;
    the default is ``"image {i+1} (1-based)"``.
    """
    if data.dtype.kind != "f" or data.size == 0:
        return
    finite = np.isfinite(data.reshape(len(data), -1)).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        what = describe(i) if describe is not None else f"image {i + 1} (1-based)"
        raise CryolabInputError(f"{what} contains NaN or infinite pixel values", path=path,
                                field="data")


def read_mrc(path, mmap: bool = False) -> tuple[np.ndarray, float | None]:
    """Read an MRC file.

    A single image (``nz == 1`` in an ``.mrc``) comes back 2D ``[y, x]``; volumes
    and stacks 3D. With ``mmap=True`` a float32 file is returned as a read-only
    memory map (not checked for NaN here: ``ParticleStack.read`` checks each batch);
    other modes are converted in memory. NaN/inf pixels are an error.

    Parameters
    ----------
    path : str or Path
        An ``.mrc`` map or image, or an ``.mrcs`` stack.
    mmap : bool
        Memory-map a float32 file instead of reading it.

    Returns
    -------
    data : float32 array
        ``[z, y, x]`` (volume), ``[image, y, x]`` (stack) or ``[y, x]`` (single image).
    pixel_size_A : float or None
        ``cella.x / mx`` in Angstrom; None when the header has no pixel size.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> vol = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)   # [z, y, x]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_mrc(Path(folder) / "map.mrc", vol, pixel_size_A=1.5)
    ...     back, pixel_size_A = read_mrc(path)
    >>> back.shape, back.dtype, pixel_size_A, bool(np.array_equal(back, vol))
    ((4, 6, 8), dtype('float32'), 1.5, True)
    """
    path = Path(path)
    info = mrc_header_info(path)
    data = open_mrc_data(path, info)
    if info["shape"][0] == 1 and path.suffix != ".mrcs":
        data = data[0]
    if mmap and data.dtype == np.float32:
        return data, info["pixel_size_A"]
    out = np.array(data, dtype=np.float32)
    check_finite(out.reshape((-1,) + out.shape[-2:]), path)
    return out, info["pixel_size_A"]


def write_mrc(path, data, pixel_size_A: float) -> Path:
    """Write a float32 MRC atomically, with the voxel size set to ``pixel_size_A``.

    2D data is one image; 3D data is a volume, or a stack of images along z when
    the name ends in ``.mrcs``. NaN/inf values are refused.

    Parameters
    ----------
    path : str or Path
        File to write (replaced if it exists; written through a temporary name).
    data : array ``[y, x]``, ``[z, y, x]`` or ``[image, y, x]``
        Converted to float32.
    pixel_size_A : float
        Pixel (voxel) size in Angstrom, positive.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> images = np.zeros((5, 16, 16))                   # five images, written as float32
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_mrc(Path(folder) / "images.mrcs", images, 2.0)
    ...     info = mrc_header_info(path)
    >>> info["shape"], info["mode"], info["pixel_size_A"]
    ((5, 16, 16), 2, 2.0)
    """
    path = Path(path)
    try:
        arr = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CryolabInputError(f"data is not numeric ({exc})", path=path, field="data") from None
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise CryolabInputError(f"expected a 2D image or 3D array, got shape {arr.shape}",
                                path=path, field="data")
    try:
        px = float(pixel_size_A)
    except (TypeError, ValueError):
        px = float("nan")
    if not np.isfinite(px) or px <= 0:
        raise CryolabInputError(f"pixel size must be a positive number, got {pixel_size_A!r}",
                                path=path, field="pixel_size_A")
    check_finite(arr.reshape((-1,) + arr.shape[-2:]), path)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            with np.errstate(over="ignore", invalid="ignore"):  # header rms of huge values
                mrc.set_data(np.ascontiguousarray(arr))
            if arr.ndim == 3 and path.suffix == ".mrcs":
                mrc.set_image_stack()
            elif arr.ndim == 3:
                mrc.set_volume()
            mrc.voxel_size = px
        os.chmod(tmp, 0o644)
    return path
