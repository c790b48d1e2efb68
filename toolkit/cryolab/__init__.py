"""cryolab: single-particle cryo-EM analysis in Jupyter.

Conventions follow RELION (see ``docs/conventions.md``): ZYZ Euler angles in
degrees, origins in Angstrom, volumes indexed ``[z, y, x]``, images ``[y, x]``,
box centre at pixel ``N // 2``.
"""
__version__ = "0.1.0"

from .errors import CryolabInputError  # noqa: F401
