"""Generate the course notebooks 01-04 from the text in this file (run: ``python notebooks/_build.py``).

The notebooks are written without outputs, so the files under version control stay reviewable;
edit the cells here, not in Jupyter, and re-run this script. Each notebook has a ``QUICK = True``
flag near the top: small sizes that run in well under a minute (CI executes them this way);
set it to ``False`` for the full-size exercises.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


# Code shared by the 3D notebooks' set-up cells: central sections of maps, map correlation.
MAP_HELPERS = """
    def show_slices(maps, title=""):
        \"\"\"The central xy, xz and yz sections of each map in ``{name: volume}``, one row per map.\"\"\"
        fig, axes = plt.subplots(len(maps), 3, figsize=(6, 2 * len(maps)), squeeze=False)
        for row, (name, vol) in zip(axes, maps.items()):
            c = vol.shape[0] // 2
            for ax, (plane, img) in zip(row, [("xy", vol[c]), ("xz", vol[:, c]), ("yz", vol[:, :, c])]):
                ax.imshow(img, cmap="gray", origin="lower"); ax.axis("off")
                ax.set_title(f"{name} {plane}", fontsize=8)
        fig.suptitle(title, fontsize=10); plt.tight_layout(); plt.show()


    def cc(a, b):
        \"\"\"Real-space correlation coefficient of two maps.\"\"\"
        return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])
    """


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip())


def answers(text: str):
    """A collapsed markdown cell with the answers to a notebook's exercises (click to open)."""
    body = textwrap.dedent(text).strip()
    return new_markdown_cell(f"<details><summary><b>Answers</b> (click to open)</summary>\n\n{body}\n\n</details>")


def quick_flag(small: str, full: str):
    return code(f"""
        QUICK = True  # CI and a first pass: {small}; set False for {full}
        """)


SETUP = """
    %matplotlib inline
    import time
    import numpy as np
    import matplotlib.pyplot as plt
"""

# --------------------------------------------------------------------------- 01
NB01 = [
    md("""
    # 01 · Image formation: from a 3D map to 2D images

    The electron microscope shines electrons through a thin layer of ice holding many copies of a
    molecule. What reaches the detector is, to a good approximation, a **projection**: the
    density of the molecule summed along the beam direction. We collect data in 2D, but we want
    3D information - single-particle analysis combines many projections, each from an unknown
    orientation, into one 3D reconstruction.

    **Learning goals**

    1. Describe an orientation with RELION's Euler angles (rot, tilt, psi) and compute the
       projection of a map in that orientation.
    2. Compare a real-space projector (sum along the beam) with a Fourier projector (central
       slice) and see that they agree.
    3. See what *low dose* means for a single image, and how averaging many images recovers
       the signal.
    """),
    quick_flag("smaller averages", "the full exercise"),
    code(SETUP + """
    from cryolab.projection import FourierProjector, project_real
    from cryolab.validation import fsc, soft_circle_mask
    from cryolab.widgets import MapViewer, example_map
    """),
    md("""
    ## The object

    Our "protein" is a ribosome map of 64³ voxels (or a blob phantom when the demo data are not
    installed). Volumes are indexed `[z, y, x]` and the box centre is voxel `N // 2`.
    Drag the threshold to change the isosurface level (in standard deviations above the mean).
    """),
    code("""
    volume, pixel_size_A = example_map()
    n = volume.shape[-1]
    print(f"map {volume.shape}, {pixel_size_A} Å/voxel, box {n * pixel_size_A:.0f} Å")
    MapViewer(volume, pixel_size_A, threshold_sigma=2.5)
    """),
    md("""
    ## Projections in real space

    An orientation is a rotation `A` (RELION: `Euler_angles2matrix(rot, tilt, psi)`, ZYZ, in
    degrees). The image is the rotated map summed along z:
    `P(x, y) = Σ_z V(Aᵀ (x, y, z))`. `rot` and `tilt` choose the viewing direction; `psi` only
    spins the image in its plane.
    """),
    code("""
    views = {"top (0, 0, 0)": (0, 0, 0), "side (0, 90, 0)": (0, 90, 0),
             "side, spun (0, 90, 60)": (0, 90, 60), "oblique (45, 45, 0)": (45, 45, 0)}
    fig, axes = plt.subplots(1, len(views), figsize=(12, 3))
    for ax, (name, eulers) in zip(axes, views.items()):
        ax.imshow(project_real(volume, eulers), cmap="gray", origin="lower")
        ax.set_title(name, fontsize=9); ax.axis("off")
    plt.show()
    """),
    md("""
    ## The same projections from Fourier space

    Summing along z is slow when we need thousands of orientations. The projection-slice
    theorem (notebook 02) gives a shortcut: take one 3D Fourier transform of the map, then every
    projection is a *central slice* of it. `FourierProjector` pads the map twice and interpolates
    the slices, as RELION does. Both routes give the same images:
    """),
    code("""
    projector = FourierProjector(volume)
    eulers = np.array([v for v in views.values()], dtype=float)
    fourier_images = projector.project(eulers)
    real_images = np.stack([project_real(volume, e) for e in eulers])
    for name, a, b in zip(views, real_images, fourier_images):
        print(f"{name:24s} correlation real vs Fourier: {np.corrcoef(a.ravel(), b.ravel())[0, 1]:.4f}")

    many = np.random.default_rng(0).uniform([-180, 0, -180], [180, 180, 180], size=(200, 3))
    t0 = time.perf_counter(); projector.project(many); t_fourier = time.perf_counter() - t0
    t0 = time.perf_counter(); [project_real(volume, e) for e in many[:20]]; t_real = (time.perf_counter() - t0) * 10
    print(f"200 projections: Fourier {t_fourier:.2f} s, real space ~{t_real:.1f} s")
    # the claim, checked: both routes give the same images (QUICK: correlations above 0.999)
    assert all(np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99 for a, b in zip(real_images, fourier_images))
    """),
    md("""
    ## Low dose: large amounts of noise

    Electrons destroy the molecule they image, so each particle receives only a few electrons
    per Å². The images are dominated by shot noise: a typical signal-to-noise ratio (variance
    of the signal over variance of the noise) is 0.01 - 0.1. Below, the same projection at
    decreasing SNR:
    """),
    code("""
    rng = np.random.default_rng(1)
    clean = fourier_images[3]
    mask = soft_circle_mask(n, radius_px=0.4 * n) > 0.5
    signal_var = clean[mask].var()

    def noisy(image, snr, rng):
        return image + rng.normal(scale=np.sqrt(signal_var / snr), size=image.shape)

    snrs = [10, 1, 0.1, 0.01]
    fig, axes = plt.subplots(1, len(snrs), figsize=(12, 3))
    for ax, snr in zip(axes, snrs):
        ax.imshow(noisy(clean, snr, rng), cmap="gray", origin="lower")
        ax.set_title(f"SNR {snr}", fontsize=9); ax.axis("off")
    plt.show()
    """),
    md("""
    ## Averaging recovers the signal

    If we knew that many images showed the *same* view, averaging `N` of them divides the noise
    variance by `N`. The Fourier ring correlation (FRC) between the average and the clean image
    shows up to which resolution the average is reliable. In real data we do not know the
    orientations - finding them is what the rest of the course is about.
    """),
    code("""
    counts = [1, 10, 100] if QUICK else [1, 10, 100, 1000]
    freq = np.arange(n // 2 + 1) / (n * pixel_size_A)
    fig, axes = plt.subplots(1, len(counts) + 1, figsize=(13, 3))
    for ax, count in zip(axes, counts):
        average = np.mean([noisy(clean, 0.01, rng) for _ in range(count)], axis=0)
        ax.imshow(average, cmap="gray", origin="lower"); ax.axis("off")
        ax.set_title(f"average of {count}", fontsize=9)
        axes[-1].plot(freq, fsc(average, clean, ndim=2), label=f"N = {count}")
    axes[-1].axhline(0.5, color="0.5", ls="--"); axes[-1].set_xlabel("1/Å"); axes[-1].set_title("FRC with the clean image", fontsize=9)
    axes[-1].legend(fontsize=8)
    plt.show()
    """),
    md("""
    ## Exercises

    1. Show numerically that changing only `psi` rotates the image in its plane: compare
       `project_real(volume, (30, 60, 40))` with the image for `(30, 60, 0)` rotated by 40°
       (`scipy.ndimage.rotate`). Which sign of the rotation matches?
    2. How are the projections at `tilt = 0` and `tilt = 180` related? Why can a single
       projection never tell us the hand of the molecule?
    3. At SNR 0.01, roughly how many images of one view do you need before the FRC stays above
       0.5 out to 20 Å?
    4. Why not simply use a higher electron dose? (Think about what the beam does to the
       sample, and what the lecture says about "low dose".)
    """),
    answers("""
    1. `scipy.ndimage.rotate(project_real(volume, (30, 60, 0)), 40, reshape=False)` matches
       `project_real(volume, (30, 60, 40))` (correlation 0.997 against 0.89 for -40°), in the
       array's own axes: psi turns the image in its plane, rot and tilt choose what is seen.
    2. Tilt 180° looks at the molecule from the opposite side: the projection is the mirror image
       of the one at tilt 0. A projection sums along the beam and so loses which side is up: the
       molecule and its mirror image give the same projections (up to a mirror and a turn), so
       the hand is invisible in any single projection, and even in many of them without
       high-resolution features such as the twist of an α-helix.
    3. Each image adds the same signal, and independent noise, so the average of `N` has `N` times
       the SNR. The FRC with the clean image is 0.5 where the average's SNR at that frequency is
       about 1/3; at 20 Å the signal is far weaker than on average (the power falls with
       frequency), so it takes several hundred to a thousand images (run with `QUICK = False` to
       see the curve for 1000).
    4. The electrons damage what they image: they break bonds and destroy the finest details
       first, after a few electrons per Å². A dose large enough for a good single image would
       leave nothing of the high-resolution structure, so the dose is kept low (and spread over
       the frames of a movie) and the signal is recovered by averaging many particles instead.
    """),
]

# --------------------------------------------------------------------------- 02
NB02 = [
    md("""
    # 02 · The projection-slice theorem

    *The 2D Fourier transform of a projection of a 3D object equals the central slice, through
    the origin and perpendicular to the viewing direction, of the object's 3D Fourier
    transform.*

    This is why single-particle analysis works: every particle image, once its orientation is
    known, fills one plane of the 3D transform; many orientations fill the whole volume, and an
    inverse transform gives the 3D map. In RELION's convention the image frequency `(kx, ky)`
    samples the map's transform at `Aᵀ (kx, ky, 0)`, where `A` is the particle's rotation.

    **Learning goals**

    1. See the theorem at work: compare the transform of a projection with a slice of the 3D
       transform, for any orientation.
    2. Check it numerically and understand where the small differences come from.
    3. Picture how projections in many orientations fill Fourier space (the basis of 3D
       reconstruction, notebook 04).
    """),
    quick_flag("a few orientations", "many orientations"),
    code(SETUP + """
    from cryolab.fourier import irfft2c, power_spectrum, rfft2c
    from cryolab.geometry import euler_to_matrix, random_rotations
    from cryolab.projection import FourierProjector, project_real
    from cryolab.validation import fsc
    from cryolab.widgets import ProjectionSliceExplorer, example_map

    volume, pixel_size_A = example_map()
    n = volume.shape[-1]
    """),
    md("""
    ## The explorer

    Move the sliders (or click one and use the arrow keys). From left to right: the projection
    computed in real space (summing the rotated map along z), the amplitude of its 2D Fourier
    transform, the central slice of the map's 3D transform in the same orientation, and the
    difference of the two transforms on the same colour scale. The caption gives their
    correlation.
    """),
    code("""
    explorer = ProjectionSliceExplorer(volume, pixel_size_A, rot_deg=30, tilt_deg=60)
    explorer
    """),
    md("""
    The widget is an ordinary Python object: its sliders can be set from code, and the arrays
    it shows are attributes (`projection`, `projection_ft`, `slice_ft`).
    """),
    code("""
    explorer.tilt.value = 90
    print(f"tilt 90: correlation {explorer.correlation:.4f}")
    explorer.psi.value = 45
    print(f"psi 45:  correlation {explorer.correlation:.4f}")
    """),
    md("""
    ## A numerical check over random orientations

    For each orientation we compute the projection in real space, take its 2D transform, and
    compare it with the central slice from `FourierProjector.project_ft`. The Fourier ring
    correlation between the two (as images) shows where they agree: up to about 0.05 1/Å
    (20 Å) it is 1 to within 1 % for every orientation. Beyond, it falls as the map's power
    runs out, and near 0.07 1/Å (14 Å) it collapses, not because of the interpolation but
    because the example map has (almost) nothing beyond: it was computed from an atomic model
    at limited resolution, and its power falls by five orders of magnitude there (the last
    panel). Small interpolation errors weigh more where the signal is weaker; beyond the band
    limit both transforms hold only tiny residues, and their correlation means little.
    """),
    code("""
    n_orient = 6 if QUICK else 50
    eulers = random_rotations(n_orient, seed_or_rng=0)
    projector = FourierProjector(volume)
    slices = projector.project_ft(eulers)
    frc = []
    for e, slice_ft in zip(eulers, slices):
        image_ft = rfft2c(project_real(volume, e))
        cc = np.vdot(image_ft, slice_ft).real / np.sqrt(np.vdot(image_ft, image_ft).real * np.vdot(slice_ft, slice_ft).real)
        frc.append(fsc(irfft2c(image_ft, n), irfft2c(slice_ft, n), ndim=2))
        print(f"rot {e[0]:7.1f}  tilt {e[1]:6.1f}  psi {e[2]:7.1f}   correlation {cc:.4f}")
    freq = np.arange(n // 2 + 1) / (n * pixel_size_A)
    power = power_spectrum(volume, ndim=3)
    fig, (ax, ax_p) = plt.subplots(1, 2, figsize=(10, 3))
    ax.plot(freq, np.array(frc).T, lw=0.8)
    ax.set_xlabel("spatial frequency (1/Å)"); ax.set_ylabel("FRC"); ax.set_title("FT(projection) vs central slice", fontsize=9)
    ax_p.semilogy(freq[1:], power[1:] / power[1]); ax_p.set_xlabel("spatial frequency (1/Å)")
    ax_p.set_ylabel("power (relative)"); ax_p.set_title("power spectrum of the example map", fontsize=9)
    for a in (ax, ax_p):
        a.axvline(0.07, color="0.5", ls=":")
    plt.tight_layout(); plt.show()
    """),
    code("""
    # the claims, checked (50 orientations: lowest FRC 0.991 below 0.05 1/Å), and the band limit is the map's
    inside = (freq > 0) & (freq < 0.05)
    assert np.min(np.array(frc)[:, inside]) > 0.985, np.min(np.array(frc)[:, inside])
    assert power[freq > 0.075].max() < 1e-6 * power[1]
    """),
    md("""
    ## Filling Fourier space

    The lecture's picture: the beam passes through the object in one direction; the projection's
    2D transform is the plane through the origin of the object's 3D transform that is
    perpendicular to the beam (its normal is the third row of `A`). Each particle image, once
    its orientation is known, fills one such central plane; many particles in many orientations
    fill the 3D transform. Below: one orientation's plane in 3D Fourier space with its beam
    direction, then how many planes pass near each point of the `(kx, kz)` section for
    orientations spread over the sphere and for *preferred orientations* (all particles lying
    nearly the same way on the grid, tilt < 30°). The preferred set never samples a double cone
    around `kz`: the **missing cone**, which no number of such particles fills.
    """),
    code("""
    n_views = 30 if QUICK else 300
    rng = np.random.default_rng(2)
    directions = {"spread over the sphere": random_rotations(n_views, seed_or_rng=1),
                  "preferred (tilt < 30°)": np.column_stack([rng.uniform(-180, 180, n_views),
                                                             rng.uniform(0, 30, n_views), np.zeros(n_views)])}
    k = np.linspace(-1, 1, 61)                       # a (kx, kz) section of Fourier space, in units of Nyquist
    kx, kz = np.meshgrid(k, k)
    section = np.stack([kx, np.zeros_like(kx), kz], axis=-1)
    coverage = {}
    for name, eul in directions.items():
        normals = euler_to_matrix(eul[:, 0], eul[:, 1], eul[:, 2])[:, 2, :]      # beam directions
        coverage[name] = (np.abs(section @ normals.T) < 0.5 * (k[1] - k[0])).sum(axis=-1)   # planes through each point

    fig = plt.figure(figsize=(13, 4))
    ax = fig.add_subplot(1, 3, 1, projection="3d")
    R = euler_to_matrix(30.0, 60.0, 0.0)
    u, v = np.meshgrid(np.linspace(-1, 1, 2), np.linspace(-1, 1, 2))
    plane = u[..., None] * R[0] + v[..., None] * R[1]       # spanned by the image axes (rows 1 and 2 of A)
    ax.plot_surface(plane[..., 0], plane[..., 1], plane[..., 2], alpha=0.4, color="tab:orange")
    ax.quiver(*(-1.6 * R[2]), *(3.2 * R[2]), color="k", arrow_length_ratio=0.08)
    ax.text(*(1.7 * R[2]), "beam", fontsize=8)
    ax.set(xlabel="kx", ylabel="ky", zlabel="kz", xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
    ax.set_title("one image = one central plane\\n(rot 30°, tilt 60°)", fontsize=9)
    for i, (name, cov) in enumerate(coverage.items()):
        ax = fig.add_subplot(1, 3, i + 2)
        im = ax.imshow(np.minimum(cov, 4), origin="lower", extent=(-1, 1, -1, 1), cmap="magma", vmin=0, vmax=4)
        ax.set(xlabel="kx (Nyquist)", ylabel="kz (Nyquist)")
        ax.set_title(f"{name}:\\nplanes through (kx, 0, kz)", fontsize=9)
        fig.colorbar(im, ax=ax, label="planes (4 or more: white)")
    plt.tight_layout(); plt.show()
    """),
    code("""
    # the claim, checked: preferred views leave the cone around kz (within 60° of it) empty; spread views do not
    angle_to_kz = np.degrees(np.arccos(np.abs(kz) / np.maximum(np.hypot(kx, kz), 1e-9)))
    cone = (angle_to_kz < 50) & (np.hypot(kx, kz) > 0.3)       # away from the cone's edge and the origin
    sampled = {name: float(np.mean(cov[cone] > 0)) for name, cov in coverage.items()}
    assert sampled["preferred (tilt < 30°)"] == 0 and sampled["spread over the sphere"] > 0.25, sampled   # QUICK: 35 %
    print(f"points in the cone sampled: spread {np.mean(coverage['spread over the sphere'][cone] > 0):.0%}, "
          f"preferred {np.mean(coverage['preferred (tilt < 30°)'][cone] > 0):.0%}")
    """),
    md("""
    ## Exercises

    1. In the explorer, change only `psi`. What happens to the projection, and to its
       transform? Explain with the theorem.
    2. Set `tilt = 0` and then `tilt = 180`. How are the two central slices related?
    3. Two different central slices always share one line through the origin ("common line").
       Which direction is it, in terms of the two beam directions? How could common lines be
       used to find relative orientations without any 3D model?
    4. On its logarithmic scale, the difference panel of the explorer is brightest near the
       centre, where the amplitudes are largest; relative to the amplitude, the differences grow
       towards high frequency. In the numerical check, re-create the projector as
       `FourierProjector(volume, pad=1)` (the explorer always pads twice) and compare the
       correlations and FRCs - why does padding help?
    5. In the coverage figure, how many planes pass near the origin, and why? How does the
       missing cone change with a maximum tilt of 60° instead of 30°?
    """),
    answers("""
    1. Changing `psi` spins the projection in its plane; by the theorem its transform spins by the
       same angle (a rotation commutes with the Fourier transform), and the central slice is the
       same plane, turned within itself. The beam direction, and so which plane, does not change.
    2. Tilt 180° looks along the opposite direction: the projection is the mirror image, and the
       central slice is the same plane, with `F(-k) = F*(k)` (Friedel symmetry) relating the two.
    3. Along the line where the two planes intersect: perpendicular to both beam directions, the
       cross product `b₁ × b₂`. Finding, for three or more images, the lines along which their 2D
       transforms agree fixes their relative orientations without a model (angular
       reconstitution, common lines).
    4. Padding samples the 3D transform more finely, so the interpolation between its samples
       errs less: with `pad=1` the correlation drops and the FRC falls earlier. The error of
       linear interpolation grows with the curvature of the transform, which padding reduces.
    5. Every plane passes through the origin, so all of them do (the DC term is measured by every
       image). With tilts up to 60° the normals reach 60° from `kz`, so the planes cover all
       directions more than 30° from `kz`: the missing cone narrows to a half-angle of 30°.
    """),
]

# --------------------------------------------------------------------------- 03
NB03 = [
    md("""
    # 03 · The contrast transfer function

    A biological specimen in ice is almost transparent to electrons: it changes the phase of
    the electron wave, not its amplitude. To see it, we image slightly out of focus; defocus and
    the spherical aberration of the lens turn phase differences into intensity, but with a
    strength that oscillates with spatial frequency. This is the **contrast transfer function**
    (CTF), in RELION's definition (defocus positive for underfocus, `u` in 1/Å):

    `γ(u) = −π λ Δf u² + (π/2) Cs λ³ u⁴ − φ − arcsin(Q₀)`, `CTF(u) = −sin γ(u) · exp(−B u² / 4)`

    with `λ` the electron wavelength (from the voltage), `Δf` the defocus (which depends on the
    direction when the image is astigmatic), `Cs` the spherical aberration, `Q₀` the amplitude
    contrast, `φ` a phase-plate shift and `B` a B-factor describing the loss of high-resolution
    signal.

    **Learning goals**

    1. Know what each microscope parameter does to the CTF and to an image.
    2. Recognise Thon rings in the power spectrum of an image.
    3. Correct the CTF's sign by phase flipping, and see why it is only a partial correction.
    4. Understand why data sets combine several defoci.
    """),
    quick_flag("fewer images", "larger sets"),
    code(SETUP + """
    from cryolab.ctf import CTFParams, ctf_1d, ctf_2d, phase_flip
    from cryolab.fourier import irfft2c, power_spectrum, rfft2c
    from cryolab.projection import FourierProjector
    from cryolab.validation import fsc
    from cryolab.widgets import CTFExplorer, example_map

    volume, pixel_size_A = example_map()
    n = volume.shape[-1]
    """),
    md("""
    ## The explorer

    Top: the CTF along the defocus-U (and, with astigmatism, V) direction with its envelope,
    and the 2D CTF. Bottom: a projection of the map, the same projection as the microscope
    records it (multiplied by the CTF in Fourier space), the phase-flipped image, and the
    average of CTF² over several defoci.
    """),
    code("""
    explorer = CTFExplorer(volume, pixel_size_A=pixel_size_A, euler_deg=(0, 90, 0))
    explorer
    """),
    md("""
    Things to try: increase the defocus (more, denser rings; the low-resolution contrast of the
    image improves); add astigmatism (the rings become ellipses); raise the B-factor (the
    envelope kills high frequencies); set the amplitude contrast to 0 (no contrast at all at the
    lowest frequencies); a phase shift of 90° (a phase plate: strong contrast close to focus).

    ## Thon rings

    The CTF multiplies everything in the image, including the ice and noise. The power spectrum
    of a micrograph therefore shows the CTF² as rings (Thon rings) - which is how defocus and
    astigmatism are measured in practice. Here: white noise passed through an astigmatic CTF.
    """),
    code("""
    box = 256 if QUICK else 512
    px_mic = 2.0
    params = CTFParams(defocus_u_A=12000, defocus_v_A=10000, defocus_angle_deg=30)
    rng = np.random.default_rng(0)
    micrographs = [irfft2c(rfft2c(rng.normal(size=(box, box))) * ctf_2d(params, box, px_mic)[0], box)
                   for _ in range(8)]          # a few noise realisations, to smooth the spectrum
    spectrum = np.mean([np.abs(np.fft.fftshift(np.fft.fft2(m))) ** 2 for m in micrographs], axis=0)
    freq = np.arange(box // 2 + 1) / (box * px_mic)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].imshow(np.log(spectrum + 1e-3), cmap="gray", origin="lower"); axes[0].set_title("power spectrum (log)", fontsize=9); axes[0].axis("off")
    axes[1].plot(freq, np.mean([power_spectrum(m) for m in micrographs], axis=0) / box ** 2, label="rotational average")
    mean_params = CTFParams(defocus_u_A=11000, defocus_v_A=11000)
    axes[1].plot(freq, ctf_1d(mean_params, freq)[0] ** 2, "--", lw=0.8, label="CTF² at the mean defocus")
    axes[1].set_xlabel("1/Å"); axes[1].legend(fontsize=8)
    plt.show()
    """),
    md("""
    The rotational average washes the rings out at high frequency: with astigmatism the rings
    are not circles, so the average mixes different phases of the CTF.

    ## Phase flipping

    A simple correction: multiply each image's transform by the sign of its CTF. This restores
    the phases (contrast no longer reverses between rings) but leaves the amplitudes
    untouched - frequencies near the zeros stay lost. The lecture's verdict: easy to do,
    reasonably effective. Below, noisy images of one view at different defoci, averaged without
    correction, after phase flipping, and with a full CTF correction `Σ C X / (Σ C² + ε)`
    (the idea behind the Wiener filter of notebook 04).
    """),
    code("""
    count = 100 if QUICK else 1000
    rng = np.random.default_rng(4)
    defoci_A = rng.uniform(8000, 30000, count)
    ctfs = CTFParams(defocus_u_A=defoci_A, defocus_v_A=defoci_A)
    projector = FourierProjector(volume)
    view = np.array([[0.0, 90.0, 0.0]] * count)
    clean = projector.project(view[:1])[0]
    images = projector.project(view, ctf=ctfs, pixel_size_A=pixel_size_A)
    images = images + rng.normal(scale=3 * images.std(), size=images.shape)

    plain_average = images.mean(axis=0)
    flipped_average = phase_flip(images, ctfs, pixel_size_A).mean(axis=0)
    c = ctf_2d(ctfs, n, pixel_size_A)
    corrected = irfft2c((rfft2c(images) * c).sum(axis=0) / ((c ** 2).sum(axis=0) + 0.1 * count), n)

    results = {"no correction": plain_average, "phase flipped": flipped_average, "CTF corrected": corrected}
    freq = np.arange(n // 2 + 1) / (n * pixel_size_A)
    fig, axes = plt.subplots(1, 5, figsize=(15, 3))
    axes[0].imshow(clean, cmap="gray", origin="lower"); axes[0].set_title("true projection", fontsize=9); axes[0].axis("off")
    for ax, (name, avg) in zip(axes[1:4], results.items()):
        ax.imshow(avg, cmap="gray", origin="lower"); ax.set_title(f"average, {name}", fontsize=9); ax.axis("off")
        axes[4].plot(freq, fsc(avg, clean, ndim=2), label=name)
    axes[4].set_xlabel("1/Å"); axes[4].set_title("FRC with the true projection", fontsize=9); axes[4].legend(fontsize=7)
    plt.show()
    """),
    md("""
    ## Why several defoci?

    At one defocus the CTF is zero at a set of frequencies: that information never reaches the
    detector and no correction can bring it back. The zeros move with the defocus, so a data set
    collected over a range of defoci covers every frequency - the mean of CTF² stays away from
    zero (except at the very lowest frequencies, where amplitude contrast alone carries the
    signal).
    """),
    code("""
    freq = np.linspace(0, 0.5 / pixel_size_A, 1000)
    fig, ax = plt.subplots(figsize=(7, 3))
    for count in (1, 3, 8):
        defoci = np.linspace(10000, 10000 + 3000 * (count - 1), count)
        ctf2 = ctf_1d(CTFParams(defocus_u_A=defoci, defocus_v_A=defoci), freq) ** 2
        ax.plot(freq, ctf2.mean(axis=0), label=f"{count} defocus value(s)")
    ax.set_xlabel("spatial frequency (1/Å)"); ax.set_ylabel("mean CTF²"); ax.legend(fontsize=8)
    plt.show()
    """),
    md("""
    ## Exercises

    1. In the explorer, find the defocus at which the first CTF zero sits at 20 Å for 300 kV.
       How does that change at 200 kV?
    2. Phase flipping needs the defocus. Repeat the phase-flipping experiment with defoci that
       are wrong by 10% - what happens to the FRC, and where?
    3. The corrected average divides by `Σ C² + ε`. Try `ε` 100 times smaller and larger. What
       does `ε` play the role of? (Compare with the Wiener filter on the lecture slide.)
    4. The lecture asks whether phase flipping causes "problems in classification". Images at
       different defoci still have different amplitudes after flipping - why might that matter
       when images are compared with each other rather than with a reference?
    """),
    answers("""
    1. Without Cs (negligible at 20 Å) the first zero is where `π λ Δf u² + arcsin(Q₀) = π`, so
       `Δf = (1 − arcsin(Q₀)/π) / (λ u²)`: with `u` = 1/20 Å⁻¹ and `Q₀` = 0.1, about 1.97 µm at
       300 kV (λ = 0.0197 Å) and 1.54 µm at 200 kV (λ = 0.0251 Å): a longer wavelength needs less
       defocus for the same zero.
    2. The zeros of the CTF move with the defocus, the more so the higher the frequency (their
       positions go as `1/√Δf`). Where the assumed and the true CTF have opposite signs the
       flipped signal subtracts instead of adding: the FRC drops, even below zero, in bands at
       high frequency, while low frequencies are unaffected.
    3. `ε` is the noise-to-signal ratio of the Wiener filter, `1/SNR`: it keeps the division from
       blowing up noise where `Σ C²` is small (near the zeros). Too small, and the noise near the
       zeros is amplified; too large, and every frequency is damped, the average too smooth.
    4. After flipping, an image still carries `|CTF|`, a band-pass that depends on its defocus. Two
       images of the same view at different defoci therefore differ, and two different views at
       the same defocus can look more alike than they are: a classification that compares
       images with each other can sort by defocus instead of by structure. Comparing each image
       with a reference to which its own CTF is applied (as RELION does) avoids this.
    """),
]

# --------------------------------------------------------------------------- 04
NB04 = [
    md("""
    # 04 · 3D reconstruction and the Wiener filter

    With the orientation of every image known, the projection-slice theorem turns
    reconstruction into bookkeeping in Fourier space: put each image's transform into the 3D
    transform as a central slice, average where slices overlap, and transform back. Two
    complications make it interesting: the CTF (each image carries its own), and noise (which
    dominates at high resolution).

    **Learning goals**

    1. Reconstruct a map by Fourier insertion (back-projection) from simulated particles.
    2. Understand the 3D Wiener filter: the optimal linear filter, which low-pass filters and
       corrects for the CTF using the signal power τ² and the noise power σ².
    3. Measure resolution with the Fourier shell correlation: against the truth, and between
       independent half sets (the gold standard, 0.143 threshold).
    """),
    quick_flag("1,000 particles", "10,000 particles"),
    code(SETUP + """
    from cryolab.ctf import CTFParams
    from cryolab.fourier import power_spectrum
    from cryolab.reconstruction import BackProjector
    from cryolab.simulate import simulate_particles
    from cryolab.validation import fsc, random_halves, resolution_at
    from cryolab.widgets import FSCViewer, MapViewer, example_map

    truth, pixel_size_A = example_map()
    n = truth.shape[-1]
    """),
    md("""
    ## Simulated particles

    Projections of the map in random orientations, each shifted a little, multiplied by its
    own CTF (defocus 1-3 µm) and buried in white noise at an SNR of 0.05. Because we simulated
    them, we know every orientation: the hard part of real processing (finding orientations) is
    skipped here so that we can study the reconstruction itself.
    """),
    code("""
    n_particles = 1000 if QUICK else 10000
    sim = simulate_particles(truth, n_particles, pixel_size_A, snr=0.05, seed=0)
    t = sim.truth
    eulers = t[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy()
    origins_px = t[["origin_x_A", "origin_y_A"]].to_numpy() / pixel_size_A
    ctf = CTFParams(defocus_u_A=t.defocus_u_A.to_numpy(), defocus_v_A=t.defocus_v_A.to_numpy(),
                    defocus_angle_deg=t.defocus_angle_deg.to_numpy())
    fig, axes = plt.subplots(1, 6, figsize=(13, 2.3))
    for ax, image in zip(axes, sim.images):
        ax.imshow(image, cmap="gray", origin="lower"); ax.axis("off")
    plt.show()
    """),
    md("""
    ## Back-projection in Fourier space

    For every image `X` with CTF `C`, `BackProjector` adds `C·X` to a 3D "data" grid and `C²`
    to a "weight" grid, along the image's central slice (trilinear interpolation on a grid
    padded twice, as RELION). Dividing data by weight gives the map's transform; the noise
    enters with a power `σ²` per Fourier pixel (here white noise of variance 1 per pixel, so
    `σ² = N²` for our unnormalised transforms).
    """),
    code("""
    def back_project(select):
        bp = BackProjector(n)
        bp.insert_images(sim.images[select], eulers[select], ctf=ctf[select], shifts_px=origins_px[select],
                         pixel_size_A=pixel_size_A, sigma2_noise=float(n * n))
        return bp

    t0 = time.perf_counter()
    bp = back_project(np.arange(n_particles))
    print(f"inserted {n_particles} images in {time.perf_counter() - t0:.1f} s")
    plain = bp.reconstruct("plain")
    """),
    md("""
    ## The 3D Wiener filter

    Plain division `Σ C X / Σ C²` is unbiased, but where the CTF is small or few images
    contribute it amplifies noise. The Wiener filter is the optimal linear filter:

    `V = Σ C X / (Σ C² + σ² / τ²)`

    with `τ²` the power of the signal and `σ²` that of the noise in each resolution shell. Where
    the signal is strong (low resolution) it is a plain CTF correction; where noise dominates it
    suppresses the map - a low-pass filter that adapts to the data. RELION learns `τ²` and `σ²`
    from the data at every iteration. If `τ²/σ²` is replaced by a constant, as often done, the
    low-pass effect is lost. And one cannot pre-Wiener-filter the images: the filter depends on
    how many images share each Fourier voxel, which is only known after insertion.
    """),
    code("""
    wiener = bp.reconstruct("wiener")   # tau2 estimated from the data
    constant = bp.reconstruct("wiener", tau2=np.full(n // 2 + 1, float(np.median(bp.tau2))))
    maps = {"truth": truth, "plain": plain, "Wiener (τ² learned)": wiener, "constant τ²/σ²": constant}
    fig, axes = plt.subplots(1, 5, figsize=(15, 3))
    for ax, (name, vol) in zip(axes, maps.items()):
        ax.imshow(vol[n // 2], cmap="gray", origin="lower"); ax.set_title(name, fontsize=9); ax.axis("off")
        axes[4].semilogy(np.arange(n // 2 + 1) / (n * pixel_size_A), power_spectrum(vol, ndim=3), label=name)
    axes[4].set_xlabel("1/Å"); axes[4].set_title("power per shell", fontsize=9); axes[4].legend(fontsize=7)
    plt.show()
    """),
    md("""
    ## Resolution: FSC against the truth

    The Fourier shell correlation compares two maps shell by shell. Against the known truth,
    0.5 is the customary threshold.
    """),
    code("""
    versus_truth = {name: fsc(vol, truth) for name, vol in maps.items() if name != "truth"}
    FSCViewer(versus_truth, n, pixel_size_A, criteria=0.5)     # against a reference: 0.5
    """),
    md("""
    ## The gold standard: independent half sets

    With real data there is no truth. Instead the particles are split at random into two
    halves that are processed completely independently; the FSC between the two half maps
    measures reproducibility. Because each half has only half of the data, the conventional
    threshold is 0.143, which corresponds to an FSC of 0.5 between the full map and the truth.
    """),
    code("""
    halves = random_halves(n_particles, seed=0)
    half_maps = [back_project(np.flatnonzero(halves == h)).reconstruct("wiener") for h in (1, 2)]
    half_fsc = fsc(*half_maps)
    fsc_viewer = FSCViewer({"half 1 vs half 2": half_fsc, "full (Wiener) vs truth": versus_truth["Wiener (τ² learned)"]},
                           n, pixel_size_A, criteria={"half 1 vs half 2": 0.143, "full (Wiener) vs truth": 0.5})
    print(f"gold-standard resolution (FSC 0.143): {resolution_at(half_fsc, 0.143, n, pixel_size_A):.1f} Å")
    print(f"full map vs truth (FSC 0.5):          {resolution_at(versus_truth['Wiener (τ² learned)'], 0.5, n, pixel_size_A):.1f} Å")
    # the claim, checked: the half maps at 0.143 give the full map's resolution against the truth at 0.5
    # (QUICK: 20.5 Å and 20.8 Å), within 15 %
    assert abs(resolution_at(half_fsc, 0.143, n, pixel_size_A)
               / resolution_at(versus_truth["Wiener (τ² learned)"], 0.5, n, pixel_size_A) - 1) < 0.15
    fsc_viewer
    """),
    md("""
    ## The reconstruction in 3D
    """),
    code("""
    MapViewer(wiener, pixel_size_A, threshold_sigma=2.5)
    """),
    md("""
    ## Exercises

    1. Set `QUICK = False` (10 times more particles). By how much does the resolution improve?
       Compare with the rule of thumb that the number of particles needed grows exponentially
       with resolution (B-factor plot).
    2. Lower the SNR to 0.01 in the simulation. Which reconstruction suffers most: plain or
       Wiener?
    3. Perturb the orientations before back-projection (`eulers + np.random.normal(scale=5, size=eulers.shape)`).
       What happens to the FSC against the truth? This is what errors in alignment do.
    4. Reconstruct from particles with tilt < 30° only (preferred orientation). Look at the map
       from the side and explain what you see with the projection-slice theorem.
    5. Why can you not apply the Wiener filter to each image before back-projection?
    """),
    answers("""
    1. With ten times the particles the resolution improves, but by a few Å, not tenfold: in the
       B-factor plot (`1/d²` against `ln N`) each factor of `e` in the number of particles gains
       the same step in `1/d²`, `2/B`, so every extra Å costs more particles than the last.
    2. The plain reconstruction: it divides by the sum of `C²` only, so where that is small (few
       slices, CTF zeros, high frequency) it amplifies the noise. The Wiener filter adds the
       noise-to-signal ratio to the denominator and damps exactly those frequencies.
    3. The FSC against the truth falls earlier: every slice lands in the wrong plane, by an angle
       that moves a voxel at radius `r` by about `r·θ`, so high frequencies average out (as a
       B-factor). Alignment errors limit the resolution however many particles there are.
    4. Tilts below 30° leave the cone of directions within 60° of `kz` empty (notebook 02): the
       map has no information along z at high frequency, and it is smeared and stretched along
       z while it looks sharp from the top. The missing cone is why preferred orientation hurts.
    5. The Wiener filter needs the signal-to-noise ratio of the data that end up in each voxel,
       the sum over all the images whose slices pass through it (`Σ C²` and the number of
       images). One image has almost no signal at most frequencies; filtered alone it would be
       damped to almost nothing, and the average of filtered images is not the filtered average.
    """),
]

NOTEBOOKS = {
    "01_image_formation.ipynb": NB01,
    "02_projection_slice_theorem.ipynb": NB02,
    "03_ctf.ipynb": NB03,
    "04_reconstruction.ipynb": NB04,
}


def build(out_dir: Path = HERE, notebooks: dict | None = None) -> list[Path]:
    """Write the notebooks (``{file name: cells}``, default ``NOTEBOOKS``; no outputs) and return their paths."""
    paths = []
    for name, cells in (NOTEBOOKS if notebooks is None else notebooks).items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}})
        for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
            cell["id"] = f"{name[:2]}-{i:02d}"
        nbformat.validate(nb)
        path = out_dir / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
