"""Multivariate statistical analysis (MSA) of particle images: eigenimages, factor coordinates, the
noise edge, and classification on the first factors (van Heel and Frank 1981; as SPIDER, IMAGIC,
Xmipp and EMAN2's e2msa compute it).

Steps (:func:`msa`):

1. every image is aligned to its view and CTF-corrected (shifted by its origin, rotated by
   ``-psi``; phase flipping by default, or a Wiener filter) and masked by a soft circle:
   :class:`cryolab.methods.msa_align.AlignedImages`, read in batches, never all at once;
2. each image is centred on its own view of the CTF-corrected mean (``centre="ctf"``, default):
   ``mu`` is the least-squares mean of the aligned images ``y_i`` given what the preparation left
   of each one's CTF, ``H_i`` (``|CTF|`` after phase flipping; Bhamre, Zhang and Singer 2016's
   mean estimator, fitted in the pass that aligns the images; the kept vectors then lose it in one
   pass over the scratch file), and image ``i`` loses ``H_i mu``. Centring on the plain mean
   instead (``centre="plain"``) leaves ``(H_i - mean H) mu`` in every image: with a defocus spread
   that is variance of its own, an eigenvalue above the noise edge even in a set of one state.
   The noise is untouched (``H_i mu`` is a fixed image per particle), so the edge below holds;
3. a streamed randomized PCA (:func:`cryolab.methods.msa_svd.streamed_pca`) gives the mean image,
   the first ``k`` eigenimages (unit norm), their eigenvalues (variances, pixel units squared),
   the explained variance ratio and each particle's factor coordinates ``[P, k]`` (pixel units);
4. the eigenvalues are tested against the Marchenko-Pastur upper edge
   ``sigma^2 (1 + sqrt(p / n))^2`` (``p`` pixels where the mask is positive, ``n`` images):
   ``sigma^2`` is given, or is the variance of the raw images' background (pixels beyond the
   mask's reach), averaged over the images. Phase flipping, shifting and rotating keep white noise
   white (unitary), so the edge holds for them; the soft edge of the mask and the damped Nyquist
   line lower the noise, so the edge is conservative. With ``ctf="wiener"`` the noise is
   coloured and ``sigma^2`` is the background variance times the filter's mean power: an
   approximation;
5. clustering on the first ``m`` factors (k-means or Ward, :mod:`cryolab.methods.msa_cluster`)
   and a classification written like any other: ``<prefix>_data.star`` with ``rlnClassNumber``
   and the class averages ``<prefix>_classes.mrcs``.

>>> import tempfile, numpy as np, pandas as pd
>>> from cryolab.io import write_particle_stack
>>> rng = np.random.default_rng(0)
>>> images = rng.normal(size=(40, 16, 16)).astype(np.float32)
>>> optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
...                        "rlnAmplitudeContrast": [0.1], "rlnImagePixelSize": [4.0]})
>>> table = pd.DataFrame({"rlnDefocusU": np.full(40, 15000.0), "rlnAnglePsi": rng.uniform(0, 360, 40)})
>>> with tempfile.TemporaryDirectory() as folder:
...     stack = write_particle_stack(f"{folder}/p.star", images, table, optics)
...     result = msa(stack, k=3, batch_size=16)
>>> result.eigenimages.shape, result.coordinates.shape, result.n_significant   # pure noise: nothing
((3, 16, 16), (40, 3), 0)
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..backend import to_device, to_numpy
from ..errors import CryolabInputError
from ..io import ParticleStack, read_mrc, read_star, write_mrc, write_star
from ..session.files import as_particles
from .msa_align import AlignedImages
from .msa_cluster import cluster, write_classification
from .msa_svd import count_significant, marchenko_pastur_edge, streamed_pca

__all__ = ["msa", "MSAResult"]

_GENERAL = {"n_images": "cryolabMsaImages", "n_pixels": "cryolabMsaPixels",
            "total_variance": "cryolabMsaTotalVariance", "noise_variance": "cryolabMsaNoiseVariance",
            "noise_edge": "cryolabMsaNoiseEdge", "n_significant": "cryolabMsaSignificant",
            "pixel_size_A": "rlnImagePixelSize"}
SCRATCH_AUTO_BYTES = 2 * 1024 ** 3
_SETTINGS = {key: "cryolabMsa" + key.title().replace("_", "") for key in
             ("ctf", "wiener_snr", "align", "centre", "batch_size", "oversampling", "power_iterations",
              "seed")}


@dataclass
class MSAResult:
    """What :func:`msa` found; NumPy arrays.

    ``mean_image [N, N]`` (the plain mean) and ``eigenimages [k, N, N]`` are in the analysis frame
    (aligned, CTF-corrected, times the mask, each image's component along the mask removed);
    eigenimages have unit norm. ``ctf_mean [N, N]``: the CTF-corrected mean the images were
    centred on (aligned frame, no mask; None with ``centre="plain"``). ``eigenvalues [k]``:
    variances along them (pixel units squared, ``/ (n - 1)``);
    ``explained_variance_ratio [k]``: over ``total_variance``; ``coordinates [P, k]``: each
    particle's centred vector times the eigenimages (pixel units). ``noise_variance``, ``noise_edge``
    and ``n_significant``: the Marchenko-Pastur test (None without a noise estimate). ``settings``:
    how the images were prepared (``ctf``, ``wiener_snr``, ``align``, ...).
    """

    mean_image: np.ndarray
    eigenimages: np.ndarray
    eigenvalues: np.ndarray
    explained_variance_ratio: np.ndarray
    coordinates: np.ndarray
    total_variance: float
    noise_variance: float | None
    noise_edge: float | None
    n_significant: int | None
    mask: np.ndarray
    n_pixels: int
    pixel_size_A: float | None
    settings: dict = field(default_factory=dict)
    image_names: list = field(default_factory=list)
    ctf_mean: np.ndarray | None = None

    @property
    def k(self) -> int:
        return len(self.eigenvalues)

    @property
    def n_images(self) -> int:
        return len(self.coordinates)

    def cluster(self, n_classes: int, *, factors: int = 5, method: str = "kmeans", seed: int = 0) -> np.ndarray:
        """0-based labels ``[P]`` from the first ``factors`` coordinates (``"kmeans"`` or ``"ward"``,
        :func:`cryolab.methods.msa_cluster.cluster`)."""
        return cluster(self.coordinates, n_classes, factors=factors, method=method, seed=seed)

    def aligned(self, particles, backend: str | None = None) -> AlignedImages:
        """The particles prepared as this analysis prepared its images (same mask and settings)."""
        s = self.settings
        return AlignedImages(_stack(particles), mask=self.mask, ctf=s.get("ctf", "flip"),
                             wiener_snr=s.get("wiener_snr", 1.0), align=s.get("align", True), ctf_mean=self.ctf_mean,
                             backend=backend)

    def write_classification(self, particles, labels, directory, prefix: str = "run", backend: str | None = None):
        """``<prefix>_data.star`` (``rlnClassNumber`` = label + 1) and ``<prefix>_classes.mrcs`` (class
        averages of the aligned images) in ``directory``; returns the two paths."""
        return write_classification(self.aligned(particles, backend), labels, directory, prefix,
                                    batch_size=int(self.settings.get("batch_size", 256)))

    def save(self, directory, prefix: str = "run") -> list[Path]:
        """Write ``<prefix>_eigenimages.mrcs`` (MRC stack ``[k, N, N]``), ``<prefix>_mean.mrc``,
        ``<prefix>_mask.mrc``, ``<prefix>_eigenvalues.star`` (a general block with the test and the
        settings, a loop of eigenvalues), ``<prefix>_coordinates.npz`` (``coordinates`` and
        ``image_names``; no pickled objects) and, when centred on it, ``<prefix>_ctf_mean.mrc``.
        Returns the paths."""
        d = Path(directory)
        px = self.pixel_size_A or 1.0
        general = {label: _plain(getattr(self, name)) for name, label in _GENERAL.items()}
        general.update({label: _plain(self.settings[key]) for key, label in _SETTINGS.items() if key in self.settings})
        table = pd.DataFrame({"cryolabMsaIndex": np.arange(1, self.k + 1), "cryolabMsaEigenvalue": self.eigenvalues,
                              "cryolabMsaExplainedVarianceRatio": self.explained_variance_ratio,
                              "cryolabMsaAboveNoiseEdge": (self.eigenvalues > self.noise_edge).astype(int)
                              if self.noise_edge is not None else np.zeros(self.k, dtype=int)})
        npz = d / f"{prefix}_coordinates.npz"
        np.savez(npz, coordinates=self.coordinates, image_names=np.asarray(self.image_names, dtype=str))
        extra = [] if self.ctf_mean is None else [write_mrc(d / f"{prefix}_ctf_mean.mrc", self.ctf_mean, px)]
        return extra + [write_mrc(d / f"{prefix}_eigenimages.mrcs", self.eigenimages, px),
                write_mrc(d / f"{prefix}_mean.mrc", self.mean_image, px),
                write_mrc(d / f"{prefix}_mask.mrc", self.mask, px),
                write_star(d / f"{prefix}_eigenvalues.star", {"general": general, "eigenvalues": table}), npz]

    @classmethod
    def load(cls, directory, prefix: str = "run") -> "MSAResult":
        """Read what :meth:`save` wrote (eigenimages as float32)."""
        d = Path(directory)
        blocks = read_star(d / f"{prefix}_eigenvalues.star")
        general, table = blocks["general"].iloc[0], blocks["eigenvalues"]
        with np.load(d / f"{prefix}_coordinates.npz", allow_pickle=False) as z:
            coordinates, names = z["coordinates"], [str(s) for s in z["image_names"]]
        values = {name: _unplain(general.get(label)) for name, label in _GENERAL.items()}
        settings = {key: _unplain(general[label]) for key, label in _SETTINGS.items() if label in general}
        if "align" in settings:
            settings["align"] = bool(settings["align"])
        eigenimages = read_mrc(d / f"{prefix}_eigenimages.mrcs")[0]
        ctf_mean = d / f"{prefix}_ctf_mean.mrc"
        return cls(mean_image=read_mrc(d / f"{prefix}_mean.mrc")[0],
                   eigenimages=eigenimages.reshape(-1, *eigenimages.shape[-2:]),
                   eigenvalues=table["cryolabMsaEigenvalue"].to_numpy(float),
                   explained_variance_ratio=table["cryolabMsaExplainedVarianceRatio"].to_numpy(float),
                   coordinates=coordinates, total_variance=float(values["total_variance"]),
                   noise_variance=values["noise_variance"], noise_edge=values["noise_edge"],
                   n_significant=None if values["n_significant"] is None else int(values["n_significant"]),
                   mask=read_mrc(d / f"{prefix}_mask.mrc")[0], n_pixels=int(values["n_pixels"]),
                   pixel_size_A=values["pixel_size_A"], settings=settings, image_names=names,
                   ctf_mean=read_mrc(ctf_mean)[0] if ctf_mean.is_file() else None)


def _plain(value):
    """A STAR value: numbers as they are, booleans as 0/1, None as the string 'None'."""
    if value is None:
        return "None"
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def _unplain(value):
    return None if value is None or (isinstance(value, str) and value == "None") else value


class _Vectors:
    """The analysis vectors, pass after pass: the first pass aligns the images (and, with a scratch
    folder, writes the float32 vectors to a file there), later passes read that file."""

    def __init__(self, aligned: AlignedImages, batch_size: int, scratch):
        self.aligned, self.batch_size, self.file, self.filled = aligned, int(batch_size), None, False
        shape = (aligned.n_images, aligned.n_pixels)
        if scratch == "auto":
            scratch = tempfile.gettempdir() if 4 * shape[0] * shape[1] <= SCRATCH_AUTO_BYTES else None
        if scratch:
            self._folder = tempfile.TemporaryDirectory(dir=scratch, prefix="cryolab-msa-")
            self.file = np.lib.format.open_memmap(Path(self._folder.name) / "vectors.npy", "w+", np.float32, shape)

    def __call__(self):
        return self._read() if self.filled else self._align()

    def centre_on_ctf_mean(self):
        """The first pass: the CTF-corrected mean (:meth:`AlignedImages.fit_ctf_mean`), the images'
        vectors kept in the scratch file, which then loses each image's view of the mean; returns
        the plain mean vector."""
        plain = self.aligned.fit_ctf_mean(self.batch_size, keep=None if self.file is None else self._keep)
        if self.file is not None:
            for lo in range(0, len(self.file), self.batch_size):
                rows = np.arange(lo, min(lo + self.batch_size, len(self.file)))
                self.file[rows] -= to_numpy(self.aligned.mean_vectors(rows))
            self.filled = True
        return plain

    def _keep(self, rows, vectors):
        self.file[rows] = to_numpy(vectors)

    def _align(self):
        for rows, x in self.aligned.batches(self.batch_size):
            if self.file is not None:
                self.file[rows] = to_numpy(x)
            yield x
        self.filled = self.file is not None

    def _read(self):
        for lo in range(0, len(self.file), self.batch_size):
            yield to_device(np.asarray(self.file[lo:lo + self.batch_size]), self.aligned.xp)

    def close(self):
        if self.file is not None:
            del self.file
            self._folder.cleanup()


def _stack(particles) -> ParticleStack:
    return as_particles(particles)


def msa(particles, k: int = 10, *, mask=None, mask_diameter_A: float | None = None, mask_edge_px: float = 3.0,
        ctf: str = "flip", wiener_snr: float = 1.0, align: bool = True, centre: str = "ctf", batch_size: int = 256,
        oversampling: int = 10, power_iterations: int = 10, noise_variance: float | None = None,
        seed: int = 0, scratch="auto", backend: str | None = None) -> MSAResult:
    """Multivariate statistical analysis of the particles (module doc).

    Parameters
    ----------
    particles : ParticleStack or path of a particle STAR file
        With ``_rlnAnglePsi`` (and origins, optional) when ``align``; CTF parameters unless
        ``ctf="none"``.
    k : int
        Eigenimages to compute; below the number of images and at most the mask's pixel count.
    mask, mask_diameter_A, mask_edge_px
        A soft mask ``[N, N]`` (0..1), or the diameter (Angstrom; default: the largest circle whose
        soft edge fits the box) and soft edge (pixels) of a circle.
    ctf : ``"flip"`` (default), ``"wiener"`` or ``"none"``
        Phase flipping ``sign(CTF)``, Wiener filter ``CTF / (CTF^2 + 1 / wiener_snr)``, or nothing.
    align : bool
        Shift each image by its origin and rotate it by ``-psi`` (default), or take it as it is.
    centre : ``"ctf"`` (default) or ``"plain"``
        What each image is centred on: its own view of the CTF-corrected mean (``H_i mu``, module
        doc; one more pass over the kept vectors), or the plain mean of all images (the only choice with
        ``ctf="none"``). With ``"plain"`` a defocus spread is variance of its own.
    batch_size, oversampling, power_iterations, seed
        Images per batch (the results do not depend on it beyond rounding), and the randomized
        PCA's extra vectors, power iterations and random seed (``power_iterations + 3`` passes).
    scratch : ``"auto"``, a folder, or None
        Where the first pass keeps the aligned vectors (float32, ``n x pixels x 4`` bytes, removed
        at the end) for the later passes to read; ``"auto"``: the system's temporary folder when
        that is at most 2 GB; None: every pass aligns the images again.
    noise_variance : float, optional
        ``sigma^2`` of the noise in the raw images (pixel units squared); default: estimated from
        their background.
    backend : ``"numpy"``, ``"cupy"`` or None (``CRYOLAB_BACKEND``)

    Returns
    -------
    MSAResult
    """
    stack = _stack(particles)
    aligned = AlignedImages(stack, mask=mask, mask_diameter_A=mask_diameter_A, mask_edge_px=mask_edge_px,
                            ctf=ctf, wiener_snr=wiener_snr, align=align, backend=backend)
    n, p = aligned.n_images, aligned.n_pixels
    if centre not in ("ctf", "plain"):
        raise CryolabInputError(f"centre must be 'ctf' or 'plain', got {centre!r}", field="centre")
    centre = "plain" if ctf == "none" else centre
    if not 1 <= int(k) < n or int(k) > p:
        raise CryolabInputError(f"k = {k} eigenimages asked for {n} images of {p} pixels in the mask (k must be "
                                "at least 1, below the number of images and at most the pixels)",
                                path=stack.star_path, field="k")
    if int(batch_size) < 1:
        raise CryolabInputError(f"batch_size must be >= 1, got {batch_size!r}", field="batch_size")
    if noise_variance is not None and not (np.isfinite(noise_variance) and noise_variance >= 0):
        raise CryolabInputError(f"noise_variance must be a number >= 0, got {noise_variance!r}",
                                field="noise_variance")
    vectors = _Vectors(aligned, batch_size, scratch)
    try:
        plain_mean = vectors.centre_on_ctf_mean() if centre == "ctf" else None
        pca = streamed_pca(vectors, int(k), oversampling=oversampling, power_iterations=power_iterations,
                           seed=seed, what=str(stack.star_path))
    finally:
        vectors.close()
    sigma2 = aligned.noise_variance if noise_variance is None else float(noise_variance)
    edge = None if sigma2 is None else marchenko_pastur_edge(sigma2, p, n)
    settings = {"ctf": ctf, "wiener_snr": float(wiener_snr), "align": bool(align), "batch_size": int(batch_size),
                "oversampling": int(oversampling), "power_iterations": int(power_iterations), "seed": int(seed),
                "centre": centre}
    mean = pca.mean if plain_mean is None else to_numpy(plain_mean)
    return MSAResult(mean_image=aligned.unflatten(mean[None])[0], eigenimages=aligned.unflatten(pca.components),
                     eigenvalues=pca.eigenvalues, explained_variance_ratio=pca.explained_variance_ratio,
                     coordinates=pca.coordinates, total_variance=pca.total_variance,
                     noise_variance=sigma2, noise_edge=edge,
                     n_significant=None if edge is None else count_significant(pca.eigenvalues, edge),
                     mask=np.asarray(to_numpy(aligned.mask), dtype=np.float32),
                     n_pixels=p, pixel_size_A=stack.pixel_size_A, settings=settings,
                     image_names=stack.image_names_for(None), ctf_mean=aligned.ctf_mean)
