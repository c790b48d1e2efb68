"""Generate the course notebooks on classification, 05, 06 and 09 (run: ``python notebooks/_build_session.py``).

They use the live :class:`cryolab.session.Session` and its widgets (``SessionDashboard``,
``PosteriorExplorer``, ``ClassGallery``). Cell helpers and the writer are shared with
``_build.py`` (notebooks 01-04); the same rules hold: no outputs in the files, a ``QUICK = True``
flag near the top, edit the cells here and re-run this script.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _build import HERE, SETUP, answers, build, code, md, quick_flag

IMPORTS = SETUP + """
    import tempfile
    from pathlib import Path
    import pandas as pd
    from cryolab.validation import class_accuracy, match_classes
    from cryolab.data import load_demo
    from cryolab.fourier import rescale
    from cryolab.session import Session
    from cryolab.simulate import simulate_views_2d
"""

# Simulated sets know the true view of each particle; class numbers are arbitrary, so the
# classes are first matched one-to-one to the views (Hungarian algorithm).
ACCURACY = code("""
    def view_of_class(labels, truth, K):
        \"\"\"For each of the K classes, the true view it is matched to (one-to-one, most shared
        particles; cryolab.validation.match_classes).\"\"\"
        return match_classes(labels, truth, n_classes=K)

    def accuracy(labels, truth, K):
        \"\"\"Fraction of particles in the class matched to their true view.\"\"\"
        return class_accuracy(labels, truth)
""")

# --------------------------------------------------------------------------- 05
NB05 = [
    md("""
    # 05 · Maximum likelihood versus projection matching

    To classify or align a particle we must know which reference and which orientation it
    matches, but the images are so noisy that we can rarely be sure. The lecture compares two
    answers to this *incomplete data* problem:

    * **projection matching (maximum cross-correlation)** treats the unknown orientation and
      class as parameters: every image is compared with every rotated reference and assigned,
      hard, to the best one (option 1: add the hidden variables to the model);
    * **maximum likelihood** keeps the uncertainty: every orientation and class gets a
      probability, `P = 0.4, P = 0.35, ..., P = 0.0001` with `ΣP = 1`, and the particle
      contributes to every reference with that weight (option 2: marginalise over them).

    RELION adds a prior on the signal power and a Fourier-space, coloured noise model to the
    likelihood (**MAP**, the regularised likelihood).

    **Learning goals**

    1. Run the same 2D classification with `mode="maxcc"`, `"ml"` and `"map"` on images whose
       true views we know, and measure how often each puts a particle in the right class.
    2. Read one particle's posterior: how probability spreads over classes and in-plane angles,
       the largest probability `Pmax`, the number of significant samples.
    3. See where hard decisions go wrong: on the particles that the likelihood itself finds
       ambiguous.
    """),
    quick_flag("32-pixel images, 2 views, 150 particles, 3 iterations",
               "64-pixel images, 4 views, 600 particles, 10 iterations"),
    code(IMPORTS + """
    from cryolab.projection import project_real
    from cryolab.widgets import PosteriorExplorer
    """),
    md("""
    ## Particles with known views

    We project the demo ribosome in a few fixed directions, spin every projection by a random
    in-plane angle ψ, shift it a little, apply a CTF and bury it in noise. The classification
    does not see the truth; we keep it (`truth`) to score the results.
    """),
    code("""
    demo = load_demo()
    if QUICK:
        volume, pixel_size_A = rescale(demo.volumes["80S"], 32, ndim=3), 2 * demo.pixel_size_A
        views, n_particles, snr, n_iter = [[0, 0], [0, 90]], 150, 0.1, 3
    else:
        volume, pixel_size_A = demo.volumes["80S"], demo.pixel_size_A
        views, n_particles, snr, n_iter = [[0, 0], [0, 90], [90, 90], [45, 45]], 600, 0.05, 10
    K = len(views)
    work_dir = Path(tempfile.mkdtemp(prefix="cryolab-05-"))
    sim = simulate_views_2d(volume, n_particles, pixel_size_A, view_eulers=views, snr=snr, seed=1,
                            out_dir=work_dir, name="views")
    truth = sim.truth["view_index"].to_numpy()

    fig, axes = plt.subplots(2, 6, figsize=(12, 4.2))
    for k, ax in enumerate(axes[0]):
        if k < K:
            ax.imshow(project_real(volume, (*views[k], 0)), cmap="gray", origin="lower")
            ax.set_title(f"view {k} (rot, tilt) = {tuple(views[k])}", fontsize=8)
        ax.axis("off")
    for i, ax in enumerate(axes[1]):
        ax.imshow(sim.images[i], cmap="gray", origin="lower")
        ax.set_title(f"particle {i}: view {truth[i]}", fontsize=8); ax.axis("off")
    plt.show()
    """),
    ACCURACY,
    md("""
    ## Three classifications of the same images

    Same particles, same number of classes, same random start (`seed=0`); only the target
    function differs:

    | mode | what an E-step does for one particle | reference update |
    |---|---|---|
    | `maxcc` | correlate with every rotated, shifted reference; keep the best | plain average of the assigned particles |
    | `ml` | probability of every (class, ψ, shift) under white Gaussian noise | probability-weighted average |
    | `map` | as `ml`, with coloured noise per frequency and the CTF | weighted average with a Wiener-like prior (`tau2_fudge`) |
    """),
    code("""
    sessions, rows = {}, []
    for mode in ("maxcc", "ml", "map"):
        t0 = time.perf_counter()
        session = Session(sim.star_path, K=K, mode=mode, seed=0)
        session.run(n_iter, progress=False)
        sessions[mode] = session
        rows.append({"mode": mode, "accuracy": accuracy(session.classes, truth, K),
                     "mean Pmax": session.pmax.mean(), "median significant samples": np.median(session.n_significant),
                     "time (s)": time.perf_counter() - t0})
    pd.DataFrame(rows).set_index("mode").round(3)
    """),
    code("""
    # the claims below, checked: projection matching is always sure (Pmax = 1), the likelihood methods are not
    # (QUICK: mean Pmax 0.25 for ml, 0.03 for map; at full size map's is not always the lower)
    assert np.all(sessions["maxcc"].pmax == 1.0)
    assert sessions["ml"].pmax.mean() < 0.9 and sessions["map"].pmax.mean() < 0.9
    if QUICK:                                       # exercise 5 asks why, "here"
        assert sessions["map"].pmax.mean() < sessions["ml"].pmax.mean()
    """),
    md("""
    With this much noise the cross-correlation is often highest for a wrong class just by chance.
    Projection matching then averages those particles into the wrong reference, which makes the
    same mistake more likely in the next iteration. The likelihood methods hedge: an ambiguous
    particle contributes a little to several references, so single wrong decisions do less
    damage. (With few particles and iterations the difference between runs is noisy; the
    full-size exercise shows it more clearly.)

    `Pmax` is the probability of the single best (class, ψ, shift) sample. It is always 1 for
    `maxcc`, because nothing else is considered. For `ml` and `map` it is usually far below 1:
    many neighbouring angles and shifts fit almost equally well.

    The class averages:
    """),
    code("""
    fig, axes = plt.subplots(3, K + 1, figsize=(2.2 * (K + 1), 6.6))
    for row, (mode, session) in zip(axes, sessions.items()):
        mapping = view_of_class(session.classes, truth, K)
        for view, ax in enumerate(row[:K]):
            k = int(np.flatnonzero(mapping == view)[0])      # the class matched to this view
            ax.imshow(session.references[k], cmap="gray", origin="lower"); ax.axis("off")
            ax.set_title(f"{mode}: class {k + 1} ~ view {view}", fontsize=8)
        row[K].hist(session.pmax, bins=np.linspace(0, 1, 21)); row[K].set_title(f"{mode}: Pmax", fontsize=8)
    plt.tight_layout(); plt.show()
    """),
    md("""
    ## One particle's posterior (the lecture's `P = 0.4, P = 0.35, ...` slides)

    `session.posterior(i)` returns, for particle `i`, the probability of each class and the most
    probable (class, ψ, shift) samples. The explorer draws them: the particle, the references
    rotated to its most probable angles with their probabilities, `P(class)` and a polar plot of
    `P(ψ)`. The second row is the same particle classified by projection matching. We start on a
    particle that the ML run finds ambiguous; move the slider to see others.
    """),
    code("""
    ml, maxcc = sessions["ml"], sessions["maxcc"]
    ambiguous = int(np.argmin(np.abs(ml.class_posterior.max(axis=1) - 0.6)))
    PosteriorExplorer(ml, compare=maxcc, index=ambiguous)
    """),
    md("""
    ## Are the doubts justified?

    If the probabilities mean something, particles whose best class gets a high probability
    should be classified correctly more often than those where ML hesitates. We sort the
    particles by ML's confidence in its best class and score both methods on each group.
    """),
    code("""
    confidence = ml.class_posterior.max(axis=1)
    groups = pd.cut(confidence, [0, 0.6, 0.9, 1.0], include_lowest=True)
    right = {mode: view_of_class(s.classes, truth, K)[s.classes] == truth for mode, s in sessions.items()}
    pd.DataFrame({"particles": pd.Series(confidence).groupby(groups, observed=False).size(),
                  **{f"{mode} correct": pd.Series(right[mode]).groupby(groups, observed=False).mean()
                     for mode in sessions}}).round(2)
    """),
    md("""
    The likelihood's confidence carries information: particles that ML is sure about are
    usually classified correctly, those where it hesitates less often (the groups are small in
    QUICK mode, so expect some scatter). Projection matching is equally "sure" (`Pmax = 1`) about
    every particle, so it cannot tell these groups apart, and each of its wrong decisions enters
    a reference with full weight. In the words of the lecture: *avoid taking hard decisions if
    the noise does not allow this.*

    ## Exercises

    1. Set `QUICK = False`. How large is the accuracy gap now? How do the class averages differ?
    2. Change `snr` to 1.0. Do the three methods become equivalent? (The lecture: in the limit
       of noiseless data they are.) What happens to `Pmax` for `ml`?
    3. Run the comparison for three different simulation seeds. How much does the accuracy vary
       from run to run? What does that mean for conclusions drawn from a single run?
    4. For `ml`, find a particle with `n_significant` > 100. Look at its `P(ψ)` in the explorer:
       is the spread around one angle or between two different angles? What could cause each?
    5. Why is `Pmax` of `map` even lower than that of `ml` here (in QUICK mode)? (Hint: the noise
       model per frequency, `session.sigma2`.)
    """),
    answers("""
    1. With more particles, more views and more iterations the likelihood methods usually keep a
       clear lead over projection matching, and their averages look sharper and cleaner: wrong
       hard assignments blur the maxCC averages and feed on themselves.
    2. At SNR 1 all three approach 100 %: when the noise does not hide the answer, the best
       sample dominates the posterior, `Pmax` of `ml` approaches 1, and hedging makes no
       difference (the lecture's noiseless limit).
    3. By several per cent between seeds, often as much as between the methods in QUICK mode. A
       single small run cannot rank methods; repeat with several seeds (or more particles) and
       compare the spread with the difference.
    4. A spread around one angle: neighbouring angles fit almost equally well, because the noise
       hides the fine detail that would tell them apart (finer sampling does not help). A spread
       between two distant angles, often 180° apart: the view looks almost the same turned (a
       pseudo-symmetric view), a genuine ambiguity of the data.
    5. `map` estimates the noise power per frequency, `session.sigma2`. Where it is larger than
       the white average that `ml` assumes (at the low frequencies that carry most of the signal
       here), the same difference between image and reference costs less likelihood, so the
       posterior is flatter; the prior also keeps the references smooth, which makes neighbouring
       samples more alike.
    """),
]

# --------------------------------------------------------------------------- 06
NB06 = [
    md("""
    # 06 · 2D classification and data cleaning

    Reference-free 2D classification sorts the particle images into `K` classes and, in the same
    run, aligns them in-plane: every class average is the sum of many aligned images, so its
    noise is much lower than in any single particle. The averages tell us which views we have,
    whether the particles are intact, and which images are not particles at all (ice,
    contamination, carbon edges, false picks). Discarding those classes and classifying the
    rest again is the everyday *data cleaning* loop before any 3D work.

    **Learning goals**

    1. Run `class2d` step by step in the `SessionDashboard` and read its curves: log-likelihood,
       class distribution, `Pmax`, resolution and spectral SNR per class.
    2. Recognise a junk class and remove it with the `ClassGallery`.
    3. Re-classify the cleaned set and measure what cleaning gained.
    """),
    quick_flag("32-pixel images, 160 particles, 5 iterations",
               "64-pixel images, 800 particles, 10 iterations"),
    code(IMPORTS + """
    from cryolab.io import write_particle_stack
    from cryolab.methods import class2d
    from cryolab.widgets import ClassGallery, PosteriorExplorer, SessionDashboard


    def purity(labels, truth):
        \"\"\"Fraction of particles in a class whose most common true label (view, or -1 for junk) is theirs.\"\"\"
        majority = {k: np.bincount(truth[labels == k] + 1).argmax() - 1 for k in np.unique(labels)}
        return float(np.mean([majority[k] == t for k, t in zip(labels, truth)]))
    """),
    md("""
    ## A data set with junk

    Three views of the ribosome, plus images of pure noise standing in for junk. The noise
    images get the same variance as the particles and borrow their CTF parameters, so nothing
    but their content gives them away. Both go into one RELION STAR file with its `.mrcs` stack.
    """),
    code("""
    demo = load_demo()
    if QUICK:
        volume, pixel_size_A = rescale(demo.volumes["80S"], 32, ndim=3), 2 * demo.pixel_size_A
        n_good, n_junk, snr, n_iter = 120, 40, 0.3, 5
    else:
        volume, pixel_size_A = demo.volumes["80S"], demo.pixel_size_A
        n_good, n_junk, snr, n_iter = 600, 200, 0.1, 10
    views = [[0, 0], [0, 90], [90, 90]]
    sim = simulate_views_2d(volume, n_good, pixel_size_A, view_eulers=views, snr=snr, seed=1)
    rng = np.random.default_rng(1)
    junk = rng.normal(scale=sim.images.std(), size=(n_junk,) + sim.images.shape[1:]).astype(np.float32)
    borrowed = sim.particles.iloc[rng.integers(0, n_good, n_junk)]
    work_dir = Path(tempfile.mkdtemp(prefix="cryolab-06-"))
    stack = write_particle_stack(work_dir / "particles.star", np.concatenate([sim.images, junk]),
                                 pd.concat([sim.particles, borrowed], ignore_index=True), sim.optics)
    truth = np.r_[sim.truth["view_index"].to_numpy(), np.full(n_junk, -1)]  # -1: junk
    print(stack)

    fig, axes = plt.subplots(1, 8, figsize=(13, 2))
    for ax, i in zip(axes, [0, 1, 2, 3, n_good, n_good + 1, 4, n_good + 2]):
        ax.imshow(stack.read([i])[0], cmap="gray", origin="lower"); ax.axis("off")
        ax.set_title("junk" if truth[i] < 0 else f"view {truth[i]}", fontsize=8)
    plt.show()
    """),
    md("""
    ## Classification with the dashboard

    `SessionDashboard` drives a `Session` that runs in a background thread, so the notebook stays
    usable while it works. **Step** runs one iteration, **Run** the number in the box, **Pause**
    waits after the current iteration and **Stop** abandons it. The controls change the settings
    between iterations:

    * `tau2 fudge T` multiplies the estimated signal power in the prior. Larger T trusts the data
      more: sharper but noisier averages (RELION: `--tau2_fudge`, 2 for 2D by default);
    * `resolution limit` ignores frequencies beyond it in the alignment (0 = no limit);
    * `psi step` is the in-plane angular sampling.

    The panels are redrawn after every iteration: the log-likelihood should rise and flatten,
    the class distribution settle, `Pmax` grow as the classes become distinct, and the
    resolution of the real classes improve.

    The log-likelihood is RELION's `_rlnLogLikelihood`: the sum over particles of
    `log p(image | model)`, with the Gaussian noise model's normalisation `-Σ log(2πσ²)` over
    the Fourier pixels used. It is a sum over those pixels, so it can only be compared between
    iterations that use the same pixels: when the resolution improves, the E-step takes in more
    Fourier shells (`history[i].max_shell`, RELION's current image size) and the sum steps down
    by the new pixels' terms. Between such steps it rises.

    We ask for one more class than there are views: room for the junk.
    """),
    code("""
    K = len(views) + 1
    session = Session(stack, K=K, mode="map", seed=1)
    dashboard = SessionDashboard(session, iterations=n_iter)
    dashboard
    """),
    md("""
    Click **Run** above, or run the next cell: it does the same and then waits for the background
    run to finish, so that the cells below see the final classes. Watch the dashboard update while
    it runs.
    """),
    code("""
    dashboard.run()
    dashboard.wait()
    last = session.history[-1]
    print(f"iteration {last.iteration}: class distribution {np.round(last.class_distribution, 2)}, "
          f"mean Pmax {last.mean_pmax:.2f}, {last.changed_assignments:.0%} changed class")
    pd.DataFrame([{"iteration": h.iteration, "log-likelihood": round(h.loglik), "Fourier shells used": h.max_shell}
                  for h in session.history]).set_index("iteration")
    """),
    code("""
    # the claim above, checked: at a fixed set of Fourier pixels the log-likelihood never falls
    hist = session.history
    for a, b in zip(hist, hist[1:]):
        if a.max_shell == b.max_shell:
            assert b.loglik >= a.loglik - 1e-6 * abs(a.loglik), (a.iteration, a.loglik, b.loglik)
    """),
    md("""
    One particle's posterior, as in notebook 05: the references at its most probable in-plane
    angles, `P(class)` and `P(ψ)`. We start on the particle the run is least sure about; move the
    slider to see how sure it is about the others (a junk image spreads its probability).
    """),
    code("""
    PosteriorExplorer(session, index=int(np.argmin(session.class_posterior.max(axis=1))))
    """),
    md("""
    `class2d(stack, K, iterations)` from `cryolab.methods` does the same without widgets: it
    creates the `Session`, runs it and returns it (and with `out_dir` writes RELION-named files
    every iteration). We use it for the second round below.

    ## Finding the junk

    The gallery shows every class average with its number of particles and resolution. Noise
    aligned to noise averages to something without the molecule's features (a faint blob or
    rings from the alignment and the prior): little signal, and a low or unknown resolution
    (`–`: the spectral SNR never exceeded 1).

    **Your turn:** look at the averages below, toggle the class (or classes) you think is junk
    to **discard** and press **Apply**, then run the next cell. (If you run all cells without
    choosing, the next cell discards the class with the least signal, the lowest mean spectral
    SNR, which is what "featureless" means in numbers.)
    """),
    code("""
    gallery = ClassGallery(session)
    gallery
    """),
    code("""
    mean_ssnr = np.array([np.mean(d) for d in session.history[-1].ssnr])   # per class
    if len(gallery.kept_classes) == K:            # nothing discarded by hand
        gallery.discard(int(np.argmin(mean_ssnr)) + 1)
    cleaned = gallery.apply()
    junk_classes = [k for k in range(1, K + 1) if k not in gallery.kept_classes]
    kept = session.class_members(gallery.kept_classes)    # indices into the original set
    print(f"discarded class(es) {junk_classes}: kept {len(cleaned)} of {len(stack)} particles")
    """),
    md("""
    Now the truth, which the classification never saw: how much junk each class holds.
    """),
    code("""
    composition = pd.DataFrame({"class": session.classes + 1, "junk": truth < 0})
    table = (composition.groupby("class").agg(particles=("junk", "size"), junk_fraction=("junk", "mean"))
             .reindex(range(1, K + 1), fill_value=0))
    table["mean SSNR"] = mean_ssnr
    table["resolution (Å)"] = [f"{r:.1f}" if np.isfinite(r) else "–" for r in session.history[-1].resolution_A]
    table["discarded"] = [k in junk_classes for k in table.index]
    print(f"junk {np.mean(truth < 0):.0%} -> {np.mean(truth[kept] < 0):.0%} after cleaning, "
          f"good particles kept {np.sum(truth[kept] >= 0)} of {n_good}")
    table.round(2)
    """),
    code("""
    # the claims, checked: the junk gathers in one class, the least signal is in it, and cleaning removes it
    junkiest = int(table["junk_fraction"].idxmax())
    assert table.loc[junkiest, "junk_fraction"] > 0.9, table
    assert int(np.argmin(mean_ssnr)) + 1 == junkiest, mean_ssnr      # lower SSNR than every good class
    assert np.mean(truth[kept] < 0) < 0.05 and np.sum(truth[kept] >= 0) >= 0.95 * n_good
    """),
    md("""
    ## Second round on the cleaned set

    Now classify only the kept particles, again with one class more than there are views: a spare
    class costs little and gives a reference-free start room to sort the views (an empty or a
    duplicated class is easy to spot and harmless). We score both rounds by *purity*: the
    fraction of particles whose class is dominated by their own kind (their view, or junk).
    """),
    code("""
    second = class2d(cleaned, K=len(views) + 1, iterations=n_iter, progress=False)
    purities = purity(session.classes, truth), purity(second.classes, truth[kept])
    print(f"first round  ({np.mean(truth < 0):.0%} junk):  purity {purities[0]:.0%}")
    print(f"second round ({np.mean(truth[kept] < 0):.0%} junk):  purity {purities[1]:.0%}")
    dash = lambda res: ["–" if not np.isfinite(r) else f"{r:.0f}" for r in res]   # noqa: E731
    print("resolution per class, first round (Å): ", dash(session.history[-1].resolution_A))
    print("resolution per class, second round (Å):", dash(second.history[-1].resolution_A))
    ClassGallery(second)
    """),
    code("""
    # what cleaning gained (QUICK: 82 % -> 98 %; the text below): at least five points of purity
    assert purities[1] > purities[0] + 0.05, purities
    """),
    md("""
    What did cleaning gain? Here the noise gathered in one class, so the good classes of the
    first round were already nearly free of it; but the junk took one of the four classes, and
    the three views had to share the other three with a start that mixed two of them (a local
    optimum: the purity of the first round is well below 100 %). On the cleaned set all four
    classes are spent on the molecule, the views separate and the purity rises. Pure noise is
    the easy case. Real junk (ice, aggregates, broken particles)
    resembles the particles more, contaminates the good classes and later the 3D map, and takes
    classes we would rather spend on real views; that is why cleaning matters. In practice it is repeated (*cascaded*): classify, discard,
    classify again, until every class looks like the molecule. Be careful not to throw away rare
    but real views: a small class with a sharp average is not junk.

    ## Exercises

    1. Double the number of junk images. Does one class still collect them all? What happens with
       `K = len(views)` (no spare class)?
    2. Run the first round with `tau2 fudge T` = 0.5 and 8 (use the slider between Steps). How do
       the averages and the resolution per class change?
    3. Set a resolution limit of 40 Å for the first iterations and remove it for the last ones
       (RELION limits early iterations for the same reason). Does the result change?
    4. Discard a good class by mistake and re-classify. Which view goes missing, and how would
       you notice without the truth?
    5. Use the `SessionDashboard` on the second round too: `Session(cleaned, K=3, mode="map")`.
       How many iterations until the class distribution stops changing?
    """),
    answers("""
    1. Noise is unlike every view, so the junk usually still gathers in one class (with more of it,
       sometimes in two). With `K = len(views)` there is no room for it: it joins the view
       classes, or two views share a class and the junk takes the other, and the purity drops.
    2. `T` = 0.5 trusts the prior more: smoother, blurrier averages, worse resolution per class.
       `T` = 8 trusts the data more: sharper but noisier averages, and resolutions that look
       better than the averages deserve (noise fitted as signal).
    3. Limiting early iterations keeps the alignment on the low frequencies, where the signal
       is, instead of chasing noise; with images this small and this clean the final classes
       may hardly change, but on real data it often helps the first iterations.
    4. The discarded view has no class in the second round. Without the truth you notice it in
       the gallery (a view you saw before is missing), in the class sizes, and later in 3D as a
       gap in the angular distribution (missing directions, notebook 02).
    5. Watch the class-distribution panel: with clean data it settles after a few iterations,
       when the fraction of particles that change class falls to a few per cent.
    """),
]

# --------------------------------------------------------------------------- 09
NB09 = [
    md("""
    # 09 · Your own data

    Everything in the previous notebooks works on a RELION particle STAR file: `_rlnImageName`
    pointing into `.mrcs` stacks, CTF parameters (`_rlnDefocusU/V`, `_rlnDefocusAngle`, voltage,
    Cs, amplitude contrast) and a pixel size, with the RELION 3.1 optics table or the older
    single-table layout. This notebook is a template for such a file: inspect it, classify it in
    2D step by step, save the results with RELION's names and write a report.

    **Learning goals**

    1. Check a particle set before spending compute on it: numbers, box and pixel size, CTF
       parameters, images.
    2. Steer a classification while it runs, and save outputs RELION can read.
    3. Produce a self-contained report of the run.
    """),
    quick_flag("a 32-pixel stand-in set of 150 particles, 3 iterations",
               "a 64-pixel stand-in of 600 particles, 10 iterations"),
    code(IMPORTS + """
    from cryolab.io import ParticleStack, read_star
    from cryolab.widgets import ClassGallery, SessionDashboard
    """),
    md("""
    ## The particles

    Put the path of your `particles.star` in `STAR_PATH` (from an Extract, Select or Class2D job;
    image paths are resolved relative to the STAR file, or to the project folder above it), and
    a folder for the outputs in `WORK_DIR`. With `STAR_PATH = None` the next cell writes a
    simulated set to disk and uses that instead, so the notebook runs anywhere.
    """),
    code("""
    STAR_PATH = None   # e.g. "Extract/job007/particles.star"
    WORK_DIR = Path(tempfile.mkdtemp(prefix="cryolab-09-"))   # e.g. Path("cryolab_class2d")
    n_iter = 3 if QUICK else 10

    if STAR_PATH is None:
        (WORK_DIR / "Extract").mkdir()
        demo = load_demo()
        volume = rescale(demo.volumes["80S"], 32, ndim=3) if QUICK else demo.volumes["80S"]
        pixel_size_A = demo.pixel_size_A * 64 / volume.shape[-1]
        stand_in = simulate_views_2d(volume, 150 if QUICK else 600, pixel_size_A, n_views=4, snr=0.2,
                                     seed=7, out_dir=WORK_DIR / "Extract", name="particles")
        STAR_PATH = stand_in.star_path
    stack = ParticleStack.from_star(STAR_PATH)
    print(stack)
    print(f"{len(stack)} particles, box {stack.box_size} px, {stack.pixel_size_A:.2f} Å/px, "
          f"box {stack.box_size * stack.pixel_size_A:.0f} Å")
    stack.table.head()
    """),
    md("""
    Check the numbers against what you expect: the pixel size (a wrong one shifts every
    resolution), the box (it should hold the particle with some room around it) and the CTF
    columns. The optics table:
    """),
    code("""
    stack.optics
    """),
    md("""
    Defocus should spread over the range you collected; the images should show particles near
    the centre; the per-image mean and standard deviation should not have wild outliers (those
    are often ice or carbon, or a normalisation problem at extraction).
    """),
    code("""
    sample = np.sort(np.random.default_rng(0).choice(len(stack), size=min(len(stack), 500), replace=False))
    images = stack.read(sample)
    fig, axes = plt.subplots(1, 3, figsize=(12, 2.8))
    axes[0].hist(stack.table["rlnDefocusU"] / 1e4, bins=30); axes[0].set_xlabel("defocus U (µm)")
    axes[1].hist(images.mean(axis=(1, 2)), bins=30); axes[1].set_xlabel("image mean")
    axes[2].hist(images.std(axis=(1, 2)), bins=30); axes[2].set_xlabel("image standard deviation")
    plt.tight_layout(); plt.show()

    fig, axes = plt.subplots(1, 8, figsize=(13, 2))
    for ax, image, i in zip(axes, images, sample):
        ax.imshow(image, cmap="gray", origin="lower"); ax.set_title(f"particle {i}", fontsize=8); ax.axis("off")
    plt.show()
    """),
    md("""
    ## Classify step by step

    Choose the number of classes (a few per expected view; RELION users often start with 50-200
    classes for large sets) and the particle diameter (the mask). One **Step** first: look at the
    panels before committing to more iterations.
    """),
    code("""
    K = 4
    particle_diameter_A = 0.8 * stack.box_size * stack.pixel_size_A
    session = Session(stack, K=K, mode="map", particle_diameter_A=particle_diameter_A, seed=0)
    dashboard = SessionDashboard(session, iterations=n_iter - 1)
    dashboard
    """),
    code("""
    dashboard.step()      # same as clicking Step
    dashboard.wait()
    print(session.history[-1].resolution_A)
    """),
    md("""
    Early on, high frequencies are mostly noise and can lead the alignment astray. Set a
    resolution limit for the next iterations (type it in the dashboard, or set the control as
    below, which calls `session.set(resolution_limit_A=...)`), then run the rest. Set it back to
    0 afterwards to use all frequencies.
    """),
    code("""
    dashboard.resolution_limit_A.value = round(4 * stack.pixel_size_A)
    dashboard.run()       # same as clicking Run: `iterations` more, in the background
    dashboard.wait()
    print(session.settings.resolution_limit_A, session.iteration)
    """),
    md("""
    ## The cores it runs on

    On Linux each E-step shares its batches of particles among worker processes, one per core
    (all cores by default; `--j N` on the command line, or `OMP_NUM_THREADS=N` before starting
    Jupyter, sets fewer). Each worker starts from this notebook's memory, so nothing is copied to
    it, and the results are the same to float rounding. `session.parallel = "threads"` keeps the
    E-step in this process. Time one E-step of a few hundred particles each way, on a copy:
    """),
    code("""
    import time
    from cryolab.engine.threads import pool_size
    subset = stack.subset(np.arange(min(len(stack), 300)))
    print(f"{pool_size()} cores for the E-step")
    for parallel in ("threads", "auto"):
        trial = Session(subset, K=K, mode="map", particle_diameter_A=particle_diameter_A, seed=0, batch_size=50)
        trial.parallel = parallel
        t0 = time.perf_counter()
        trial.estep()
        print(f"parallel={parallel!r}: one E-step of {len(subset)} particles in {time.perf_counter() - t0:.1f} s")
    """),
    md("""
    ## Save with RELION's names

    `session.save(folder)` writes the current iteration as `run_itNNN_data.star` (particles with
    class, ψ, origins, `_rlnMaxValueProbDistribution`, `_rlnNrOfSignificantSamples`),
    `run_itNNN_model.star` (class distribution, resolution, noise and SSNR spectra) and
    `run_itNNN_classes.mrcs` (the averages), which `relion_display` and RELION's Subset selection
    read; plus `_optimiser.json` and `_state.npz` to resume from.
    """),
    code("""
    stem = session.save(WORK_DIR / "Class2D")
    print("\\n".join(sorted(p.name for p in (WORK_DIR / "Class2D").iterdir())))
    read_star(f"{stem}_data.star")["particles"].head()
    """),
    md("""
    A saved run can be resumed later, in a new kernel, with `Session.resume(folder)`:
    """),
    code("""
    resumed = Session.resume(WORK_DIR / "Class2D")
    print(f"resumed at iteration {resumed.iteration}, {len(resumed.particles)} particles")
    """),
    md("""
    ## Report

    `session_report(session, path)` (from `cryolab.report`) writes one HTML file with the settings, the convergence curves, the
    class averages and the spectra; the figures are embedded, so the file can be mailed or
    attached to a lab notebook as it is.
    """),
    code("""
    from cryolab.report import session_report
    report_path = session_report(session, WORK_DIR / "report.html")
    print(report_path, f"{Path(report_path).stat().st_size / 1024:.0f} KiB")
    """),
    md("""
    ## Keep the good classes

    As in notebook 06: discard the bad classes, **Apply**, and write the selection as a new STAR
    file for the next job (`gallery.selected.write_star(...)`).
    """),
    code("""
    gallery = ClassGallery(session)
    gallery
    """),
    code("""
    selected = gallery.apply()   # same as clicking Apply
    (WORK_DIR / "Select").mkdir(exist_ok=True)
    print(selected, "->", selected.write_star(WORK_DIR / "Select" / "particles.star"))
    """),
    md("""
    ## Exercises

    1. Point `STAR_PATH` at a RELION tutorial data set (or your own) and run the notebook with a
       few hundred particles first. How long does one iteration take? Estimate the time for the
       whole set.
    2. Large boxes make every iteration slower. Downscale the images (RELION's extraction
       rescaling, or `cryolab.fourier.rescale`) and compare the class averages.
    3. Run with `mode="maxcc"` and compare the averages with the MAP run (notebook 05).
    4. Open `run_itNNN_classes.mrcs` and `run_itNNN_model.star` in RELION (`relion_display --i
       run_it010_model.star --display rlnReferenceImage`) and check that the classes match.
    5. After discarding classes, write the selection with `gallery.selected.write_star(...)` and
       start a new `Session` from that file.
    """),
    answers("""
    1. The dashboard's status line gives the time of the last iteration; the time grows about in
       proportion to the number of particles (and the number of classes, angles and pixels), so
       scale the time of a few hundred particles to the whole set.
    2. Averages of the downscaled images look the same up to their new Nyquist frequency (twice
       the new pixel size), and every iteration is several times faster; downscale as long as
       Nyquist stays finer than the resolution the classes reach.
    3. The maxCC averages are usually noisier and more blurred: every wrong hard assignment
       enters them with full weight (notebook 05).
    4. They should be the same images in the same order: the files follow RELION's names and
       conventions, so `relion_display` shows the classes cryolab computed.
    5. `Session(gallery.selected.write_star(path), K=..., mode="map")` (or `class2d(path, ...)`):
       the written STAR file is an ordinary particle file, with the optics table.
    """),
]

NOTEBOOKS = {
    "05_ml_vs_projection_matching.ipynb": NB05,
    "06_2d_classification.ipynb": NB06,
    "09_your_own_data.ipynb": NB09,
}

if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE, NOTEBOOKS):
        print(p)
