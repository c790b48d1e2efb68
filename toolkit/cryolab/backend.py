"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU, with the same code.

Every numerical function in cryolab takes arrays of either kind and asks
:func:`get_xp` for the module that matches them. The default for new arrays
is chosen by the ``CRYOLAB_BACKEND`` environment variable (``numpy`` or
``cupy``) or by an explicit ``backend=`` argument.

>>> import numpy as np
>>> get_xp(np.zeros(3)).__name__
'numpy'
"""
from __future__ import annotations

import os
from types import ModuleType

import numpy as np

__all__ = ["get_xp", "get_fft", "to_numpy", "to_device", "cupy_available",
           "backend_name", "resolve_backend"]


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        import cupy  # noqa: F401
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve_backend(backend: str | None = None) -> ModuleType:
    """Array module for a backend name (``"numpy"``/``"cupy"``/None = environment)."""
    name = (backend or os.environ.get("CRYOLAB_BACKEND", "numpy")).lower()
    if name in ("numpy", "cpu", "np"):
        return np
    if name in ("cupy", "gpu", "cuda"):
        if not cupy_available():
            raise RuntimeError("backend 'cupy' asked for, but CuPy or a GPU is not available "
                               "(install the extra: pip install 'cryolab[gpu]')")
        import cupy
        return cupy
    raise ValueError(f"unknown backend {name!r}: use 'numpy' or 'cupy'")


def get_xp(*arrays) -> ModuleType:
    """The array module (numpy or cupy) of the given arrays; numpy when none is a CuPy array."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy
            return cupy
    return np


def backend_name(xp: ModuleType) -> str:
    return "cupy" if xp.__name__.startswith("cupy") else "numpy"


def get_fft(xp: ModuleType):
    """FFT module for ``xp``: scipy.fft (multi-threaded) or cupyx.scipy.fft."""
    if xp is np:
        import scipy.fft
        return scipy.fft
    import cupyx.scipy.fft
    return cupyx.scipy.fft


def fft_kwargs(xp: ModuleType) -> dict:
    """Extra keyword arguments for FFT calls: all cores on the CPU."""
    return {"workers": -1} if xp is np else {}


def to_numpy(a):
    """A NumPy array of ``a`` (copies from the GPU when ``a`` is a CuPy array)."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def to_device(a, xp: ModuleType):
    """``a`` as an array of module ``xp`` (no copy when it already is one)."""
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)
