"""A strict stand-in for CuPy that runs on NumPy and records every host-device transfer.

``install(monkeypatch)`` puts fake ``cupy`` and ``cupyx`` modules in ``sys.modules``; cryolab's
backend then takes them for a GPU (``get_xp`` recognises the arrays by their type's module). The
arrays (:class:`DeviceArray`) hold a NumPy array but behave like CuPy's where CuPy is strict:

* no implicit conversion to NumPy (``np.asarray(device_array)`` raises ``TypeError``), so an
  array can reach the host only through ``.get()``, ``tolist()``/``item()`` or ``float()``/
  ``int()``/``bool()``, and each of those is recorded in :data:`TRANSFERS` as ``("to_host",
  bytes)``;
* no mixing with NumPy arrays in arithmetic or in the module's functions (CuPy raises there);
* reductions and scalar indexing give 0-d device arrays, not Python numbers.

``cupy.asarray`` of a NumPy array is recorded as ``("to_device", bytes)``. The values are
NumPy's, so a computation on the stand-in gives the same numbers as on NumPy.
"""
from __future__ import annotations

import sys
import types

import numpy as np
import scipy.fft
import scipy.ndimage

TRANSFERS: list = []


def _record(direction: str, nbytes: int):
    """Record a transfer with the innermost cryolab frame that asked for it (``module:line``)."""
    frame, where = sys._getframe(1), "?"
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("cryolab") and name != "cryolab.backend":
            where = f"{name}:{frame.f_lineno}"
            break
        frame = frame.f_back
    TRANSFERS.append((direction, int(nbytes), where))


def _strict(x, where: str):
    if isinstance(x, np.ndarray) and x.ndim > 0:
        raise TypeError(f"{where}: a NumPy array where a device array is needed (CuPy raises here)")
    return x


def _unwrap(x, where: str = "argument", allow_host: bool = False):
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, where, allow_host) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, where, allow_host) for k, v in x.items()}
    return x if allow_host else _strict(x, where)


def _wrap(x):
    if isinstance(x, (np.ndarray, np.generic)) and not isinstance(x, DeviceArray):
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _index(key):
    """Indices may be NumPy arrays (CuPy copies them to the device); device arrays are unwrapped."""
    return _unwrap(key, allow_host=True)


class DeviceArray:
    """An array "on the device": NumPy values behind CuPy's strict rules (see the module text)."""

    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, a):
        self._a = a

    # what CuPy forbids ---------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("implicit conversion of a device array to NumPy: use .get() (CuPy raises here)")

    # explicit transfers ---------------------------------------------------------------
    def get(self, *args, **kwargs):
        _record("to_host", self._a.nbytes)
        return self._a.copy()

    def tolist(self):
        _record("to_host", self._a.nbytes)
        return self._a.tolist()

    def item(self, *args):
        _record("to_host", self._a.itemsize)
        return self._a.item(*args)

    # plain attributes -----------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    T = property(lambda self: DeviceArray(self._a.T))
    flags = property(lambda self: self._a.flags)

    @property
    def real(self):
        return DeviceArray(self._a.real)

    @real.setter
    def real(self, value):
        self._a.real = _unwrap(value, "real")

    @property
    def imag(self):
        return DeviceArray(self._a.imag)

    @imag.setter
    def imag(self, value):
        self._a.imag = _unwrap(value, "imag")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (DeviceArray(np.asarray(v)) for v in self._a)

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        self._a[_index(key)] = _unwrap(value, "__setitem__ value")

    def __getattr__(self, name):
        if name.startswith("__"):                     # __array_interface__ and the like: not forwarded
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, f".{name}()"), **_unwrap(kwargs, f".{name}()")))
        return method

    # NumPy's protocols, as CuPy implements them -----------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        res = getattr(ufunc, method)(*_unwrap(inputs, ufunc.__name__), **_unwrap(kwargs, ufunc.__name__))
        return out[0] if out is not None and len(out) == 1 else _wrap(res)

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap(args, func.__name__), **_unwrap(kwargs, func.__name__)))


def _binary(name):
    def op(self, other):
        res = getattr(self._a, name)(_unwrap(other, f"operator {name}"))
        if res is NotImplemented:
            return res
        return self if name.startswith("__i") else _wrap(res)
    return op


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift"):
    for _form in ("__{}__", "__r{}__", "__i{}__"):
        setattr(DeviceArray, _form.format(_name), _binary(_form.format(_name)))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(DeviceArray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(DeviceArray, f"__{_name}__", (lambda n: lambda self: DeviceArray(getattr(self._a, n)()))(f"__{_name}__"))
for _name, _convert in (("__float__", float), ("__int__", int), ("__bool__", bool), ("__index__", int)):
    # one element to the host (a synchronisation in CuPy)
    setattr(DeviceArray, _name, (lambda f: lambda self: (_record("to_host", self._a.itemsize), f(self._a))[1])(_convert))
DeviceArray.__hash__ = None
DeviceArray.__module__ = "cupy._core.core"        # what cryolab.backend.get_xp looks for


def _to_device(a, dtype=None, **kwargs):
    if isinstance(a, DeviceArray):
        return a if dtype is None or a.dtype == dtype else DeviceArray(a._a.astype(dtype))
    out = np.array(a, dtype=dtype, copy=True)
    _record("to_device", out.nbytes)
    return DeviceArray(out)


class _StrictModule(types.ModuleType):
    """A module whose functions are NumPy's (or another module's) behind the strict rules."""

    def __init__(self, name: str, base, extra: dict | None = None):
        super().__init__(name)
        self._base = base
        self.__dict__.update(extra or {})

    def __getattr__(self, name):
        attr = getattr(self._base, name)
        if isinstance(attr, (type, types.ModuleType)) or not callable(attr):
            return attr

        def function(*args, **kwargs):
            return _wrap(attr(*_unwrap(args, f"{self.__name__}.{name}"), **_unwrap(kwargs, f"{self.__name__}.{name}")))
        function.__name__ = name
        return function


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1


class _Device:
    mem_info = (8 * 2 ** 30, 8 * 2 ** 30)


class _Pool:
    @staticmethod
    def free_bytes():
        return 0


def _scatter_add(target, idx, values):
    np.add.at(target._a, _index(idx), _unwrap(values, "scatter_add"))


def modules() -> dict:
    """The fake ``cupy``, ``cupyx``, ``cupyx.scipy``, ``cupyx.scipy.fft`` and ``cupyx.scipy.ndimage``."""
    cuda = types.SimpleNamespace(runtime=_Runtime(), Device=_Device)
    cupy = _StrictModule("cupy", np, {"ndarray": DeviceArray, "asarray": _to_device, "array": _to_device,
                                      "asnumpy": lambda a: a.get(), "cuda": cuda,
                                      "get_default_memory_pool": lambda: _Pool(),
                                      "fft": _StrictModule("cupy.fft", np.fft),
                                      "linalg": _StrictModule("cupy.linalg", np.linalg),
                                      "random": _StrictModule("cupy.random", np.random)})
    fft = _StrictModule("cupyx.scipy.fft", scipy.fft)
    ndimage = _StrictModule("cupyx.scipy.ndimage", scipy.ndimage)
    sci = types.ModuleType("cupyx.scipy")
    sci.fft, sci.ndimage = fft, ndimage
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy, cupyx.scatter_add = sci, _scatter_add
    return {"cupy": cupy, "cupy.fft": cupy.fft, "cupyx": cupyx, "cupyx.scipy": sci, "cupyx.scipy.fft": fft,
            "cupyx.scipy.ndimage": ndimage}


def install(monkeypatch):
    """Put the fake modules in ``sys.modules`` for one test (``monkeypatch`` undoes it)."""
    for name, mod in modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    TRANSFERS.clear()
