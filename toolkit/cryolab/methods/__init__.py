"""Processing methods built on :class:`cryolab.session.Session`."""
from .class2d import class2d  # noqa: F401
