"""Continuous heterogeneity: particles on a manifold and the energy landscape along it.

* :func:`fit_variability` - linear variability (probabilistic PCA of maps fitted by EM at the
  consensus poses): mean map, eigenvolumes, per-particle coordinates (:mod:`.linear`);
* :func:`diffusion_coordinates` - diffusion maps of images of similar viewing direction,
  CTF-aware distances, a self-tuning kernel (bandwidths from the data), aligned across views (:mod:`.diffusion`);
* :func:`free_energy` / :func:`equal_population_bins` / :func:`bin_maps` - occupancy as
  ``-kT ln p`` with bootstrap errors, maps of bins with half-set FSCs (:mod:`.landscape`);
* :func:`latent_leaks` - does a coordinate follow pose, origin, defocus or image norm instead of
  the structure? (:mod:`.leaks`).
"""
from .diffusion import (DiffusionMap, DiffusionResult, diffusion_coordinates, diffusion_kernel, diffusion_map,
                        local_scales)
from .landscape import (BinMaps, FreeEnergyProfile, bin_maps, equal_population_bins, find_minima, free_energy,
                        free_energy_2d)
from .leaks import LEAK_THRESHOLD, latent_leaks, nuisance_table
from .linear import filter_shell, fit_variability
from .result import VariabilityResult, load_variability

__all__ = ["fit_variability", "filter_shell", "VariabilityResult", "load_variability", "free_energy",
           "free_energy_2d", "find_minima", "FreeEnergyProfile", "equal_population_bins", "bin_maps", "BinMaps",
           "latent_leaks", "nuisance_table", "LEAK_THRESHOLD", "diffusion_coordinates", "diffusion_map", "DiffusionMap",
           "DiffusionResult", "diffusion_kernel", "local_scales"]
