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

__all__ = ["get_xp", "get_fft", "to_numpy", "to_device", "cupy_available", "cupy_status",
           "backend_name", "resolve_backend", "set_cpu_threads", "BackendError"]

#: the environment variable that chooses the backend when none is given
BACKEND_VARIABLE = "CRYOLAB_BACKEND"

_CPU_THREADS: int = -1      # scipy.fft workers (-1: all cores); see set_cpu_threads


class BackendError(RuntimeError):
    """The array backend asked for cannot run here (the message says why)."""


def cupy_status() -> str | None:
    """None when CuPy imports and sees at least one GPU, else why not (the exception's message:
    not installed, no device, a CUDA driver or runtime error)."""
    try:
        import cupy
    except Exception as exc:                              # ImportError, or a broken CUDA install
        return f"CuPy cannot be imported ({type(exc).__name__}: {exc}); install the extra: pip install 'cryolab[gpu]'"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:                              # pragma: no cover - needs a CUDA install
        return f"CUDA error ({type(exc).__name__}: {exc})"
    return None if count > 0 else "CuPy sees no GPU"


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU (:func:`cupy_status` says why not)."""
    return cupy_status() is None


def resolve_backend(backend: str | None = None) -> ModuleType:
    """Array module for a backend name: ``"numpy"``, ``"cupy"``, or None for the
    ``CRYOLAB_BACKEND`` environment variable (numpy when unset).

    Raises :class:`BackendError` with CuPy's or CUDA's own message when ``cupy`` cannot run.

    >>> resolve_backend("numpy").__name__
    'numpy'
    """
    name = (backend or os.environ.get(BACKEND_VARIABLE) or "numpy").lower()
    if name in ("numpy", "cpu", "np"):
        return np
    if name in ("cupy", "gpu", "cuda"):
        why = cupy_status()
        if why is not None:
            source = "" if backend else f" (from {BACKEND_VARIABLE})"
            raise BackendError(f"backend 'cupy'{source} asked for, but {why}")
        import cupy
        return cupy
    raise ValueError(f"unknown backend {name!r}: use 'numpy' or 'cupy'")


def set_cpu_threads(n: int | None) -> None:
    """Use at most ``n`` threads in CPU FFTs (scipy.fft ``workers``; None or -1: all cores).
    BLAS threads are set by ``OMP_NUM_THREADS`` before numpy is imported (the CLI's ``--j``)."""
    global _CPU_THREADS
    _CPU_THREADS = -1 if not n or n < 0 else int(n)


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
    return {"workers": _CPU_THREADS} if xp is np else {}


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
