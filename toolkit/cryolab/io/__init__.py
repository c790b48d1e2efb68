"""Reading and writing RELION files: STAR tables, MRC maps and stacks, particle stacks.

Every reader raises ``CryolabInputError`` naming the file and field for bad
input; every writer writes atomically (temporary file, then rename). Particle
STAR files are written with image paths relative to the working folder, as
RELION run from that folder (its project folder) reads them::

    from cryolab.io import ParticleStack, read_mrc
    stack = ParticleStack.from_star("particles.star")
    images = stack.read(range(8))                  # float32 [8, N, N]
    volume, pixel_size_A = read_mrc("map.mrc")
"""
from ._files import project_path
from .mrc import mrc_header_info, read_mrc, write_mrc
from .stack import ParticleStack, ctf_from_table, write_particle_stack
from .star import optics_from_particles, read_particles, read_star, write_particles, write_star

__all__ = [
    "ctf_from_table",
    "read_star", "write_star", "read_particles", "write_particles", "optics_from_particles",
    "read_mrc", "write_mrc", "mrc_header_info",
    "ParticleStack", "write_particle_stack", "project_path",
]
