"""Generate course notebook 07 on 3D classification (run: ``python notebooks/_build_3d.py``).

Cell helpers and the writer are shared with ``_build.py``; the same rules hold: no outputs in
the files, a ``QUICK = True`` flag near the top, edit the cells here and re-run this script.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _build import HERE, MAP_HELPERS, SETUP, answers, build, code, md, quick_flag

# --------------------------------------------------------------------------- 07
NB07 = [
    md("""
    # 07 · 3D classification: one sample, several structures

    A purified complex is rarely one structure. Some particles have lost a subunit, others have
    a factor bound or sit in another conformation. 2D classification sorts views, but views of
    two different structures can look alike; 3D classification compares every particle with
    `K` 3D maps, each projected in every orientation, and so separates structures rather than
    views. Its difficulty is the start: without an idea of what the states look like, all `K`
    classes begin from the same consensus map, and something has to make them different.

    Our sample is the demo ribosome: the whole **80S** ribosome and its large subunit alone,
    the **60S** (the same complex without the 40S subunit), mixed about half and half.

    **Learning goals**

    1. Make `K` different starting maps (*seeds*) from one reference: low-pass filter it, then
       refine it once on each of `K` random subsets of the particles.
    2. Run 3D classification iteration by iteration and follow how many particles end in the
       class of their true state.
    3. Read the class maps and the posterior probability of each class for single particles.
    4. Choose `K`: see what an extra class does when there are fewer states than classes.

    Honest limits of this toolkit: the examples use small boxes (32 px) and a high SNR, so that
    they run in seconds. At a realistic SNR of 0.05 and 32 px, cryolab's 3D classification does
    not yet separate these two states (exercise 3 lets you see that).
    """),
    quick_flag("32-pixel maps, 300 particles at SNR 1, 10 iterations",
               "32-pixel maps, 1000 particles at SNR 0.3, 15 iterations (a few minutes)"),
    code(SETUP + """
    import tempfile
    from pathlib import Path
    import ipywidgets as W
    import pandas as pd
    from cryolab.data import load_demo
    from cryolab.fourier import lowpass, rescale
    from cryolab.methods import class3d, generate_seeds
    from cryolab.simulate import simulate_particles
    from cryolab.validation import class_accuracy, match_classes
    from cryolab.io import ParticleStack
    from cryolab.reconstruction import reconstruct_stack
    from cryolab.simulate import TRUTH_LABELS
    from cryolab.widgets import MapViewer, PosteriorExplorer

    """ + MAP_HELPERS),
    md("""
    ## Two states and their particles

    We scale both maps to the box size, simulate particles in random orientations with CTF and
    noise, and keep the truth (`truth`: 0 = 80S, 1 = 60S) to score the classification, which
    never sees it. The 40S subunit is what tells the states apart: it is the difference map.
    """),
    code("""
    demo = load_demo()
    if QUICK:
        box, n_particles, snr, n_iter = 32, 300, 1.0, 10
    else:
        box, n_particles, snr, n_iter = 32, 1000, 0.3, 15
    pixel_size_A = demo.pixel_size_A * demo.box_size / box
    states = {s: rescale(demo.volumes[s], box, ndim=3) for s in ("80S", "60S")}
    work_dir = Path(tempfile.mkdtemp(prefix="cryolab-07-"))
    sim = simulate_particles(states, n_particles, pixel_size_A, snr=snr, seed=1, out_dir=work_dir)
    truth = sim.truth["class_index"].to_numpy()
    print(f"{n_particles} particles, {box} px, {pixel_size_A:g} Å/px, SNR {snr}: "
          f"{np.sum(truth == 0)} of 80S, {np.sum(truth == 1)} of 60S")
    show_slices({**states, "80S - 60S (the 40S)": states["80S"] - states["60S"]}, "the true states")

    fig, axes = plt.subplots(1, 6, figsize=(12, 2))
    for i, ax in enumerate(axes):
        ax.imshow(sim.images[i], cmap="gray", origin="lower"); ax.axis("off")
        ax.set_title(f"particle {i}: {sim.truth['class_name'][i]}", fontsize=8)
    plt.show()
    """),
    md("""
    ## Step 1: seeds from one reference

    We start from one map, as in practice (an initial model, or a refinement of all particles).
    Here it is the 80S map, the bigger of the two states. Two steps make `K` seeds from it:

    1. **Low-pass filter** it (`ini_high_A`, here 50 Å). Fine details of a map made elsewhere
       are not those of our particles; keeping only the low resolution avoids imposing them
       (*reference bias*) and makes the 40S-or-not question the main difference left.
    2. **Split the particles at random into `K` subsets** and run one iteration of refinement
       (`K = 1`) on each subset against the filtered map. Each seed is a reconstruction from
       different particles, so the seeds differ a little: in their noise and, by chance, in how
       many particles of each state their subset holds.

    Those small differences are what the classification amplifies: a particle of the 60S
    fits the seed with slightly less 40S density slightly better, that seed moves towards the
    60S, and so on. `generate_seeds` does both steps; the settings after `K` are the ones of the
    one-iteration refinement (HEALPix order 1 is a 30° angular step).
    """),
    code("""
    K = 2
    ini_high_A = 50
    sampling = dict(healpix_order=1, offset_range_px=2, oversampling=0)
    t0 = time.perf_counter()
    seeds = generate_seeds(sim.star_path, states["80S"], K, ini_high_A=ini_high_A, seed=0, **sampling)
    print(f"{K} seeds in {time.perf_counter() - t0:.1f} s")
    filtered = lowpass(states["80S"], ini_high_A, pixel_size_A, ndim=3)
    show_slices({"80S, 50 Å": filtered, "seed 1": seeds[0], "seed 2": seeds[1],
                 "seed 1 - seed 2": seeds[0] - seeds[1]}, "the reference and the seeds")
    low = {s: lowpass(v, ini_high_A, pixel_size_A, ndim=3) for s, v in states.items()}
    pd.DataFrame({f"cc with {s} (50 Å)": [cc(seed, v) for seed in seeds] for s, v in low.items()},
                 index=["seed 1", "seed 2"]).round(3)
    """),
    md("""
    Both seeds still look like the filtered 80S (high correlation), and they differ only
    slightly from each other (the difference map is mostly noise). That is intended: the seeds
    must be close to the data, but not identical.

    ## Step 2: classify, one iteration at a time

    `class3d(..., iterations=0)` sets up the run without running it; given `K` maps it uses them
    as the starting classes. Each `session.step()` is one E-step (every particle against every
    class in every orientation and shift, with probabilities) and one M-step (new class maps,
    noise spectrum and class sizes). The first iteration matches projections by correlation
    only (RELION's `--firstiter_cc`), which brings a map from elsewhere onto the grey scale of
    the data. Class numbers are arbitrary, so to score a run we match each class to the state it
    shares most particles with (`match_classes`) and count the particles in the class of their
    state (`class_accuracy`).
    """),
    code("""
    session = class3d(sim.star_path, seeds, K=K, iterations=0, ini_high_A=ini_high_A, progress=False,
                      **sampling)
    accuracy, sizes, changed = [], [], []
    t0 = time.perf_counter()
    for _ in range(n_iter):
        result = session.step()
        accuracy.append(class_accuracy(session.classes, truth))
        sizes.append(result.class_distribution)
        changed.append(result.changed_assignments)
    print(f"{n_iter} iterations in {time.perf_counter() - t0:.1f} s; "
          f"final accuracy {accuracy[-1]:.0%}")

    its = np.arange(1, n_iter + 1)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    axes[0].plot(its, accuracy, marker="o"); axes[0].axhline(0.5, color="gray", ls="--", lw=1)
    axes[0].set(xlabel="iteration", ylabel="particles in their state's class", ylim=(0.4, 1.02),
                title="accuracy (0.5: chance)")
    axes[1].plot(its, np.array(sizes), marker="."); axes[1].set(xlabel="iteration", title="class sizes")
    axes[2].plot(its[1:], changed[1:], marker="."); axes[2].set(xlabel="iteration",
                                                               title="particles that changed class")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    plt.tight_layout(); plt.show()
    """),
    md("""
    The first iteration is little better than chance: the seeds are almost the same map. Then
    the classes drift apart, each iteration moving the particles that fit the other class
    better, until few particles change class any more. (The numbers depend on the random seeds
    of the simulation and of the subsets.)

    ## The class maps

    Which class became which state? The table counts the particles of each state per class,
    and measures, for each class map, the density in the region of the 40S subunit relative to
    that in the 60S (1.02 for the true 80S map, 0.02 for the true 60S). The viewers show the maps; drag the
    threshold to see the small subunit appear or vanish.
    """),
    code("""
    mapping = match_classes(session.classes, truth)
    names = list(states)
    forty = low["80S"] - low["60S"]
    in_40S = forty > forty.mean() + 2 * forty.std()          # voxels of the small subunit
    in_60S = low["60S"] > low["60S"].mean() + low["60S"].std()
    table = pd.crosstab(pd.Series(session.classes + 1, name="class"),
                        pd.Series(sim.truth["class_name"], name="true state"))
    table["matched to"] = [names[mapping[k - 1]] for k in table.index]
    table["40S density / 60S density"] = [session.references[k - 1][in_40S].mean()
                                          / session.references[k - 1][in_60S].mean() for k in table.index]
    display(table.round(2))

    order = np.argsort(mapping)                              # the class matched to 80S first
    viewers = [MapViewer(session.references[k], pixel_size_A, threshold_sigma=1.5,
                         backend="slices" if QUICK else "auto") for k in order]
    W.VBox([W.VBox([W.HTML(f"<b>class {k + 1}</b> (matched to {names[mapping[k]]})"), v])
            for k, v in zip(order, viewers)])
    """),
    md("""
    Neither class reaches 1 or 0. A class map is the average of its particles, so its ratio
    follows its make-up: a class holding a fraction `f` of 80S particles should show about
    `f · 1.02 + (1 − f) · 0.02`. The class matched to 80S does. The class matched to 60S shows
    more 40S density than its make-up explains: its particles were placed with the coarse
    angular search of this run (30° steps, no oversampling), and orientation errors smear the
    60S density into the neighbouring 40S region. We check both by reconstructing each class's
    particles at their true orientations (which the simulation knows):
    """),
    code("""
    at_truth = ParticleStack.from_star(sim.star_path)         # the same particles, at their true poses
    for column, label in TRUTH_LABELS.items():
        at_truth.table[label] = sim.truth[column].to_numpy()
    ratio = lambda m: float(m[in_40S].mean() / m[in_60S].mean())   # noqa: E731
    rows = []
    for k in order:
        members = np.flatnonzero(session.classes == k)
        f80 = float(np.mean(truth[members] == 0))
        true_poses = lowpass(reconstruct_stack(at_truth.subset(members)), session.history[-1].resolution_A[k],
                             pixel_size_A, ndim=3)
        rows.append({"class": k + 1, "matched to": names[mapping[k]], "80S fraction f": f80,
                     "expected from f": f80 * ratio(states["80S"]) + (1 - f80) * ratio(states["60S"]),
                     "class map": ratio(session.references[k]), "true poses": ratio(true_poses)})
    ratios = pd.DataFrame(rows).set_index("class")
    ratios.round(2)
    """),
    code("""
    # the claims, checked (QUICK: 80S class 0.88 for f = 0.89; 60S class 0.53, at true poses 0.21 for f = 0.18)
    for k, row in ratios.iterrows():
        assert abs(row["true poses"] - row["expected from f"]) < 0.12, ratios      # the make-up explains it
    r80, r60 = (ratios[ratios["matched to"] == s].iloc[0] for s in ("80S", "60S"))
    assert abs(r80["class map"] - r80["expected from f"]) < 0.12, ratios
    assert r60["class map"] > r60["true poses"] + 0.15, ratios                     # the smear of orientation errors
    """),
    md("""
    ## The posterior over classes

    Like in 2D (notebook 05), every particle gets a probability for each class:
    `session.posterior(i)["classes"]` (the same numbers are in `session.class_posterior`). Below
    are the particles the run was most unsure about, and for comparison two it was sure about.
    The explorer shows one particle's whole posterior: the class maps projected at its most
    probable orientations, `P(class)`, and the probability over viewing directions (rot as
    longitude, tilt from the top of the map).
    """),
    code("""
    PosteriorExplorer(session, index=int(np.argmin(session.class_posterior.max(axis=1))))
    """),
    code("""
    p_best = session.class_posterior.max(axis=1)
    correct = mapping[session.classes] == truth
    unsure = np.argsort(p_best)[:4]
    sure = np.flatnonzero(p_best > 0.99)[:2]
    picked = np.r_[unsure, sure]
    fig, axes = plt.subplots(1, len(picked) + 1, figsize=(15, 2.8),
                             gridspec_kw={"width_ratios": [1] * len(picked) + [1.6]})
    for ax, i in zip(axes, picked):
        post = session.posterior(i)["classes"]
        ax.bar([f"class {k + 1}\\n({names[mapping[k]]})" for k in range(K)], post,
               color=["tab:green" if mapping[k] == truth[i] else "tab:gray" for k in range(K)])
        ax.set(ylim=(0, 1), title=f"particle {i}: {names[truth[i]]}")
        ax.tick_params(labelsize=7)
    group = np.digitize(p_best, [0.9, 0.99, 0.999])
    labels = ["< 0.9", "0.9-0.99", "0.99-0.999", "> 0.999"]
    right, wrong = (np.bincount(group[sel], minlength=4) for sel in (correct, ~correct))
    axes[-1].bar(labels, right, label="right class")
    axes[-1].bar(labels, wrong, bottom=right, label="wrong class")
    axes[-1].set(xlabel="P(best class)", ylabel="particles", title="all particles")
    axes[-1].tick_params(labelsize=7, axis="x", labelrotation=20); axes[-1].legend(fontsize=7)
    plt.tight_layout(); plt.show()
    print(f"P(best class) > 0.99 for {np.mean(p_best > 0.99):.0%} of the particles; "
          f"{np.mean(~correct):.0%} are in the wrong class")
    """),
    md("""
    Green is the class of the particle's true state. Most particles get a probability close to
    1 for one class, also many of the wrongly classified ones: the likelihood of a whole image
    is a product over hundreds of pixels, so small differences in fit become large differences
    in probability. A high class probability therefore means "this class fits better", not
    "this particle is certainly of this state". Orientations are uncertain too, and a
    particle seen from a direction where the 40S hides behind the 60S carries little
    information about its state.

    ## How many classes? An extra class

    We rarely know how many states there are. What does a class too many do? We run the same
    data with `K = 3` (seeds from three subsets) and follow the class sizes.
    """),
    code("""
    history3 = []
    t0 = time.perf_counter()
    session3 = class3d(sim.star_path, states["80S"], K=3, iterations=n_iter, ini_high_A=ini_high_A,
                       seeds="subsets", progress=False, callback=lambda s, r: history3.append(r), **sampling)
    print(f"K = 3: {n_iter} iterations in {time.perf_counter() - t0:.1f} s")
    table3 = pd.crosstab(pd.Series(session3.classes + 1, name="class"),
                         pd.Series(sim.truth["class_name"], name="true state"))
    table3["40S density / 60S density"] = [session3.references[k - 1][in_40S].mean()
                                           / session3.references[k - 1][in_60S].mean() for k in table3.index]
    display(table3.round(2))
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(np.arange(1, n_iter + 1), [r.class_distribution for r in history3], marker=".")
    ax.set(xlabel="iteration", ylabel="class distribution", title="K = 3")
    ax.legend([f"class {k + 1}" for k in range(3)], fontsize=7)
    plt.show()
    show_slices({f"class {k + 1}": session3.references[k] for k in range(3)}, "K = 3: the class maps")
    """),
    md("""
    With two states and three classes, the classification does not invent a third structure.
    Typically one state is spread over two classes whose maps look alike (compare their 40S
    density in the table), sometimes together with particles of the other state that fit no
    class well; or the extra class stays small and noisy. Neither is harmful in itself: two
    classes of the same state can be merged afterwards, and a small class of poor particles can
    be discarded (a *junk* class, as in 2D). cryolab, like RELION, keeps every class alive:
    a class that loses almost all its particles is re-seeded from the largest class
    (`reseed_empty_classes`), so an empty class does not simply disappear.

    Practical rule: choose `K` somewhat larger than the number of states you expect, look at
    the maps, merge classes that show the same structure, and check a surprising class by
    classifying its particles again. Too small a `K` is worse: two states forced into one
    class give an average of both.

    ## Exercises

    1. Set `QUICK = False` (more particles, lower SNR, more iterations). How many iterations
       until the accuracy stops rising? How does the final accuracy compare?
    2. Start the classes with `seeds="lowpass"` (`class3d(sim.star_path, states["80S"], K=2,
       seeds="lowpass", ...)`): every class starts from the same filtered map. Do the classes
       still separate, and after how many iterations? Why?
    3. Simulate at `snr=0.05` (a realistic value) with `QUICK = True`. What happens to the
       accuracy curve? (At this box size cryolab does not separate the states yet: more
       particles, a larger box and finer angular sampling are needed.)
    4. Use the 60S map as the reference. Does a class with the 40S subunit appear anyway? What
       does this tell you about reference bias at 50 Å?
    5. Repeat the `K = 3` run with `reseed_empty_classes=False` and with `K = 4`. What happens to
       the extra classes? Which classes would you merge?
    6. Change `tau2_fudge` (default 4 in 3D) to 1 and to 16. How do the class maps and the
       accuracy change?
    """),
    answers("""
    1. At the lower SNR the accuracy rises more slowly and levels off lower; more particles help,
       so it keeps improving for more iterations. Watch the fraction of changed assignments: when
       it stays near zero, further iterations gain little.
    2. Identical starting classes give every particle the same likelihood for each class, so each
       class receives the same weighted average and they stay alike: only noise and the random
       first iteration can break the symmetry, and then slowly if at all. Seeds from different
       random subsets differ from the start; that small difference is what the classification
       amplifies.
    3. Near chance (about 50 % with two equal states) and flat: at this SNR, box and angular
       sampling a 40S-or-not decision per particle is not possible yet.
    4. The 40S is about a third of the mass of the 80S, so its signal is strong: if a class with
       it appears, the data overcame the reference, and at 50 Å the reference biases little. If
       none appears, the reference dominated; comparing with a run from the 80S tells which.
    5. Without reseeding an unneeded class can empty and stay empty; with `K = 4` one state is
       usually spread over several classes. Merge the classes whose maps agree (high correlation,
       the same 40S density ratio) and check a doubtful one by classifying its particles again.
    6. `tau2_fudge` multiplies the signal power in the prior: 1 gives smoother, more cautious
       maps; 16 sharper but noisier ones that can fit noise and make classes differ by noise.
       The accuracy is usually best in between.
    """),
]

NOTEBOOKS = {"07_3d_classification.ipynb": NB07}

if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE, NOTEBOOKS):
        print(p)
