"""Generate course notebook 12 on picking and tilt pairs (run: ``python notebooks/_build_picking.py``).

Cell helpers and the writer are shared with ``_build.py``; the same rules hold: no outputs in
the files, a ``QUICK = True`` flag near the top, edit the cells here and re-run this script.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _build import HERE, SETUP, build, code, md, quick_flag

NB12 = [
    md("""
    # 12 · Finding particles, and checking a map with tilt pairs

    Before there are particles there are micrographs. **Template picking** correlates each micrograph
    with images of the particle (2D class averages or projections of a map), rotated in-plane and
    multiplied by the micrograph's CTF; the peaks of this *figure of merit* above a threshold, at least
    a particle diameter apart, are the picks. The **Laplacian of Gaussian** finds blobs of a given size
    without any template. After a map exists, **tilt pairs** test it: the same particles imaged untilted
    and tilted must have orientations that differ by the goniometer's tilt.

    **Learning goals**

    1. Read a figure-of-merit map; set a threshold and see precision and recall move.
    2. See why the score should not depend on the template's grey scale, and why the threshold can
       come from a false-alarm rate.
    3. See *Einstein from noise*: templates find what they look for, even in pure noise; a strict
       low-pass filter limits the damage.
    4. Validate a map's hand with tilt pairs.
    """),
    quick_flag("2 micrographs of 512 x 512 and one of pure noise",
               "8 micrographs of 1024 x 1024 with 60 ribosomes each and 2 of pure noise (about 3 minutes)"),
    code(SETUP + """
    from cryolab.data import load_demo
    from cryolab.picking import Picker, PickSettings, make_templates, match_picks
    from cryolab.projection import FourierProjector
    from cryolab.simulate import simulate_micrographs
    from cryolab.widgets import PickingViewer, tilt_pair_plot

    px, diameter = 6.0, 300.0                      # A/px, particle diameter in A
    n_mic, n_noise, n_part, size = (2, 1, 15, 512) if QUICK else (8, 2, 60, 1024)
    ribosome = load_demo().volumes["80S"]
    sim = simulate_micrographs(ribosome, n_mic, n_part, px, size_px=size, n_noise=n_noise, particle_diameter_A=diameter,
                               snr=0.05, snr_pixel_size_A=2.0, seed=11)
    views = [[0, 0, 0], [0, 90, 0], [90, 90, 0], [45, 45, 0], [135, 45, 0], [45, 135, 0], [90, 30, 0], [160, 120, 0]]
    references = FourierProjector(ribosome).project(np.array(views, float))   # white particles, as class averages
    print(f"{n_mic} micrographs with {n_part} particles and {n_noise} of pure noise, {size} x {size} px at {px} A/px")
    """),
    md("""
    ## 1. Template picking

    Eight projections of the ribosome, each rotated every 20° in-plane, low-pass filtered to 20 Å and
    multiplied by the micrograph's CTF. The micrographs have dark particles and the references white
    ones, hence `invert=True` (RELION's `--invert`). The figure of merit is a z-score: the template's
    correlation divided by what pure noise would give. The threshold comes from the number of false
    picks we accept per micrograph of pure noise (0.1 by default). Move the slider.
    """),
    code("""
    templates = make_templates(references, px, particle_diameter_A=diameter, psi_step_deg=20, map3d=False, invert=True)
    picker = Picker(PickSettings(particle_diameter_A=diameter, lowpass_A=20, highpass_A=600), px, size, templates)
    picks = picker.pick(sim.micrographs[0], sim.ctf[0])
    print(f"{len(templates)} templates; threshold {picks.threshold:.2f} (z-score); {len(picks.table)} picks")
    PickingViewer(sim.micrographs[0], picks, px, diameter, truth_xy=sim.coordinates(0))
    """),
    md("""
    ## 2. All micrographs, templates against LoG

    A pick is right when it lies within a quarter diameter of a true centre. Note the pure-noise
    micrographs: the false-alarm threshold keeps them (nearly) empty.
    """),
    code("""
    log_picker = Picker(PickSettings(particle_diameter_A=diameter, mode="log", log_diameters_A=(200, 350),
                                     highpass_A=600), px, size)
    for name, p in (("templates", picker), ("LoG", log_picker)):
        tp = fp = fn = 0
        noise = []
        for m in range(len(sim.micrographs)):
            r = match_picks(p.pick(sim.micrographs[m], sim.ctf[m]).xy(), sim.coordinates(m), diameter / 4 / px)
            tp, fp, fn = tp + r["tp"], fp + r["fp"], fn + r["fn"]
            if sim.noise[m]:
                noise.append(r["fp"])
        print(f"{name:9s} precision {tp / max(tp + fp, 1):.2f}  recall {tp / max(tp + fn, 1):.2f}  "
              f"false picks on pure noise {noise}")
    """),
    md("""
    ### Micrographs need not be square

    Detectors give 4096 x 4096, 3710 x 3838 or 5760 x 4092 pixels. Give the size as (rows, columns): the
    picker searches a grid of the same shape at one scale on both axes, and the coordinates come back as
    RELION's `_rlnCoordinateX` (column) and `_rlnCoordinateY` (row).
    """),
    code("""
    wide = simulate_micrographs(ribosome, 1, 14, px, size_px=(384, 640), particle_diameter_A=diameter, snr=0.05,
                                snr_pixel_size_A=2.0, contaminants=1, seed=22)
    wide_picks = Picker(log_picker.settings, px, (384, 640)).pick(wide.micrographs[0], wide.ctf[0])
    r = match_picks(wide_picks.xy(), wide.coordinates(0), diameter / 4 / px)
    print(f"LoG on 384 x 640: search grid {wide_picks.fom.shape}, precision {r['precision']:.2f}, recall {r['recall']:.2f}")
    PickingViewer(wide.micrographs[0], wide_picks, px, diameter, truth_xy=wide.coordinates(0))
    """),
    md("""
    ## 3. The template's grey scale does not matter

    Class averages come with an arbitrary scale. A score that depends on it (RELION's does: a template
    twice too bright gives almost no picks) needs a new threshold for every set of references. Ours
    divides by the template's norm:
    """),
    code("""
    for scale in (0.25, 4.0):
        t = make_templates(references * scale, px, particle_diameter_A=diameter, psi_step_deg=20, map3d=False, invert=True)
        other = Picker(picker.settings, px, size, t).pick(sim.micrographs[0], sim.ctf[0])
        print(f"references x {scale}: {len(other.table)} picks, "
              f"{match_picks(other.xy(), picks.xy(), 0.5)['tp']} at the same pixels as before")
    """),
    md("""
    ## 4. Einstein from noise

    Pick a micrograph of **pure noise** with an unfiltered template and a low threshold, cut out the
    several hundred picks and average them. The average looks like the template (correlation about
    0.6): every pick was chosen because its noise happened to resemble it. With the template low-pass
    filtered to 40 Å, what comes back is the template's 40-Å version: the bias cannot carry detail
    beyond the filter, which is why picking templates are filtered strictly.
    """),
    code("""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((1024, 1024)).astype(np.float32)
    einstein = references[3]
    box = einstein.shape[-1]

    def average_of_picks(lowpass_A):
        t = make_templates(einstein, px, particle_diameter_A=diameter, psi_step_deg=360, map3d=False)
        p = Picker(PickSettings(particle_diameter_A=diameter, lowpass_A=lowpass_A, threshold=1.5, min_distance_A=40,
                                max_stddev_noise=None), px, 1024, t).pick(noise, None)
        xy = p.xy().astype(int)
        patches = [noise[y - box // 2:y + box // 2, x - box // 2:x + box // 2] for x, y in xy
                   if box // 2 <= x < 1024 - box // 2 and box // 2 <= y < 1024 - box // 2]
        return np.mean(patches, axis=0), len(patches)

    fig, ax = plt.subplots(1, 3, figsize=(9, 3))
    ax[0].imshow(einstein, cmap="gray"); ax[0].set_title("template")
    for a, lp in zip(ax[1:], (None, 40.0)):
        avg, n = average_of_picks(lp)
        c = np.corrcoef(avg.ravel(), einstein.ravel())[0, 1]
        a.imshow(avg, cmap="gray"); a.set_title(f"{n} picks of noise, {'no filter' if lp is None else f'{lp:g} A'}\\n"
                                                f"correlation with the template {c:.2f}", fontsize=9)
    for a in ax:
        a.set_xticks([]); a.set_yticks([])
    """),
    md("""
    ## 5. Tilt pairs: is the hand right?

    Each particle is imaged twice, the second time with the stage tilted by 15° about an axis at 30°
    in the image. Orientations found against a map (here simulated with a few degrees of error) give,
    per pair, the rotation from one image to the other: its angle is the tilt, its axis the tilt axis.
    With the right map the pairs cluster at (30°, 15°). With the map's mirror image the cluster moves
    to the opposite side: same tilt, axis 210°, the hand is wrong. With a wrong map they scatter.
    (`relion_tiltpair_plot` draws the same points at 180° − axis.)
    """),
    code("""
    import ipywidgets as W
    from cryolab.geometry import euler_to_matrix, matrix_to_euler, random_rotations
    from cryolab.validation.tiltpair import axis_angle_rotation, expected_rotation, tilt_pair_stats
    from cryolab.widgets._display import ImagePanel

    n_pairs, tilt, axis = (100 if QUICK else 300), 15.0, 30.0
    rng = np.random.default_rng(2)
    a_u = euler_to_matrix(*random_rotations(n_pairs, rng).T)
    a_t = expected_rotation(tilt, axis) @ a_u

    def found(a, err_deg=3.0):            # an orientation search with a few degrees of error
        out = []
        for m in a:
            v = rng.standard_normal(3); v /= np.linalg.norm(v)
            out.append(matrix_to_euler(axis_angle_rotation(v, rng.normal(0, err_deg)) @ m))
        return np.array(out)

    mirror = np.diag([1.0, 1.0, -1.0])
    cases = {"correct map": (found(a_u), found(a_t)),
             "mirrored map": (found(mirror @ a_u @ mirror), found(mirror @ a_t @ mirror)),
             "wrong map": (random_rotations(n_pairs, rng), random_rotations(n_pairs, rng))}
    panel, choice, text = ImagePanel(dpi=70), W.ToggleButtons(options=list(cases)), W.HTML()

    def show(_=None):
        st = tilt_pair_stats(*cases[choice.value], expected_tilt_deg=tilt, expected_axis_deg=axis, n_boot=200)
        text.value = (f"median tilt {st.median_tilt:.1f}° (95 % {st.tilt_ci[0]:.1f}-{st.tilt_ci[1]:.1f}), axis "
                      f"{st.median_axis:.0f}°, {st.fraction_within:.0%} within 5°, Rayleigh p = {st.rayleigh_p:.1g}, "
                      f"hand <b>{st.hand}</b>")
        panel.show(tilt_pair_plot(st))

    choice.observe(show, names="value")
    show()
    W.VBox([choice, text, panel])
    """),
    md("""
    ## Exercises

    1. Lower the threshold in the viewer until the recall reaches 1. What happens to the precision, and
       where do the new false picks lie (carbon, contaminants, empty ice)?
    2. Repeat section 4 with `lowpass_A=20`. How much of the template comes back?
    3. In section 5, raise the orientation error to 6°. How does the fraction within 5° change? Is
       the hand still recognised?
    """),
]

NOTEBOOKS = {"12_picking_and_tilt_pairs.ipynb": NB12}

if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE, NOTEBOOKS):
        print(p)
