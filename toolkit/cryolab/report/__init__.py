"""One self-contained HTML report of a run (figures embedded as base64 PNG, matplotlib Agg).

Sections: summary/results, parameters, class averages (2D) or central slices (3D maps),
class distribution and log-likelihood across iterations, Pmax histogram, angular
distribution (psi histogram in 2D, rot/tilt scatter in 3D), FSC curves with the 0.143 line
and the resolution, the exact command to reproduce, the environment and input checksums.

* :func:`directory_report` rebuilds it from files: ``run.json`` (or ``*_run.json``), the
  last ``<prefix>_itNNN_*`` files (``model.star`` tables of every iteration for the history;
  ``data.star``; ``classes.mrcs`` or ``classNNN.mrc``) and ``*postprocess*.star`` files
  (FSC tables) with their maps, in the folder and its sub-folders. RELION job folders work too.
  Further runs beside the first (another prefix or sub-folder) add their last 3D class maps.
* :func:`session_report` reports a live :class:`cryolab.session.Session`.
"""
from __future__ import annotations

import html
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .figures import (fig_central_slices, fig_class_averages, fig_fsc, fig_histogram, fig_history,
                      fig_rot_tilt)
from .heterogeneity import heterogeneity_sections
from .variability import variability_sections
from .steps import (CONVERGENCE_TEXT, REFINE_TEXT, optics_summary, read_step_settings, readable,
                    resolution_text, settings_rows)

__all__ = ["ReportData", "collect_directory", "collect_session", "render_html",
           "directory_report", "session_report"]

_IT_DATA = re.compile(r"(.+)_it(\d{3,})_data\.star$")


@dataclass
class ReportData:
    """Everything a report shows; every field is optional (empty sections are left out)."""
    title: str = "cryolab report"
    run: dict = field(default_factory=dict)          # run.json content
    parameters: dict = field(default_factory=dict)
    command: str = ""
    history: list = field(default_factory=list)      # dicts: iteration, loglik, class_distribution, time_s
    class_images: np.ndarray | None = None           # [K, N, N] 2D class averages
    maps: dict = field(default_factory=dict)         # name -> [N, N, N] (3D classes, post-processed maps)
    pmax: np.ndarray | None = None
    psi: np.ndarray | None = None
    rot: np.ndarray | None = None
    tilt: np.ndarray | None = None
    classes: np.ndarray | None = None                # 1-based class numbers per particle
    fsc: list = field(default_factory=list)          # dicts: name, freq_per_A, fsc, resolution_A
    results: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)      # files the report was built from
    extra: list = field(default_factory=list)        # (title, [png base64], {label: value}) sections
    label: str = ""                                  # the step's folder and prefix, e.g. "class3d/run"
    optics: dict = field(default_factory=dict)       # particles, box, pixel size, Nyquist, CTF (steps.optics_summary)
    settings: dict = field(default_factory=dict)     # the step's settings (its optimiser.json)
    steps: list = field(default_factory=list)        # ReportData of the other runs in the folder


# --------------------------------------------------------------------------- collecting

def _col(table, name):
    return table[name].to_numpy(dtype=float) if name in table.columns else None


def _classifications(folder: Path, level: str) -> list:
    """``(folder, prefix, last iteration)`` of every run with ``<prefix>_itNNN_data.star`` files
    in ``folder`` (``level=""``) or its sub-folders (``"*/"``), in name order."""
    last = {}
    for p in sorted(folder.glob(f"{level}*_it[0-9][0-9][0-9]*_data.star")):
        m = _IT_DATA.match(p.name)
        if m:
            key = (p.parent, m.group(1))
            last[key] = max(last.get(key, 0), int(m.group(2)))
    return [(*key, it) for key, it in last.items()]


def _latest_classification(folder: Path):
    """``(folder, prefix, iteration)`` of the newest ``<prefix>_itNNN_data.star`` in ``folder``
    (preferred) or a sub-folder; None when there is none."""
    for level in ("", "*/"):
        found = _classifications(folder, level)
        if found:
            return found[0]
    return None


def _class_maps(data: ReportData, folder: Path, prefix: str, it: int, root: Path | None = None,
                label: str = "") -> None:
    """The 3D class maps ``<prefix>_itNNN_classNNN.mrc`` into ``data.maps`` (sources relative to ``root``)."""
    from ..io import read_mrc
    for p in sorted(folder.glob(f"{prefix}_it{it:03d}_class[0-9][0-9][0-9].mrc")):
        data.maps[f"{label}class {int(p.stem[-3:])}"] = read_mrc(p)[0]
        data.sources.append(p.relative_to(root or folder).as_posix())


def _other_class_maps(data: ReportData, folder: Path, shown) -> None:
    """The last 3D class maps of every other run in ``folder`` and its sub-folders (e.g. the
    demo's ``class3d/`` beside ``class2d/``), labelled with their folder."""
    for sub, prefix, it in _classifications(folder, "") + _classifications(folder, "*/"):
        if (sub, prefix, it) != shown:
            label = f"{prefix}: " if sub == folder else f"{sub.relative_to(folder).as_posix()}: "
            _class_maps(data, sub, prefix, it, root=folder, label=label)


def _read_history(folder: Path, prefix: str) -> list:
    from ..io import read_star
    out = []
    for p in sorted(folder.glob(f"{prefix}_it[0-9][0-9][0-9]*_model.star")):
        m = re.search(r"_it(\d+)_model\.star$", p.name)
        blocks = read_star(p)
        general, classes = blocks.get("model_general"), blocks.get("model_classes")
        if general is None or classes is None:
            continue
        out.append({"iteration": int(m.group(1)),
                    "loglik": float(general["rlnLogLikelihood"].iloc[0]) if "rlnLogLikelihood" in general else np.nan,
                    "class_distribution": classes["rlnClassDistribution"].to_numpy(float).tolist()})
    return [h for h in out if h["iteration"] > 0]


def _add_gold_standard_fsc(data, blocks, n, px):
    for name, block in blocks.items():
        if name.startswith("model_class_") and "rlnGoldStandardFsc" in block.columns:
            curve = block["rlnGoldStandardFsc"].to_numpy(float)
            if np.any(curve != 0):
                from ..validation import resolution_at
                res = resolution_at(curve, 0.143, n, px)
                crossed = bool(np.any(curve[1:] < 0.143))
                data.fsc.append({"name": f"class {name.rsplit('_', 1)[1]} (gold standard)",
                                 "freq_per_A": block["rlnResolution"].to_numpy(float), "fsc": curve,
                                 "resolution_A": res, "resolution_text": resolution_text(res if crossed else 0, 2 * px)})


def _collect_classification(data: ReportData, folder: Path, prefix: str, it: int) -> None:
    from ..io import read_mrc, read_particles, read_star
    stem = folder / f"{prefix}_it{it:03d}"
    table, _ = read_particles(f"{stem}_data.star")
    data.pmax = _col(table, "rlnMaxValueProbDistribution")
    data.psi, data.rot, data.tilt = (_col(table, f"rlnAngle{a}") for a in ("Psi", "Rot", "Tilt"))
    cls = _col(table, "rlnClassNumber")
    data.classes = None if cls is None else cls.astype(int)
    data.history = _read_history(folder, prefix)
    data.sources += [f"{stem.name}_data.star", f"{prefix}_itNNN_model.star"]
    data.optics = optics_summary(f"{stem}_data.star")
    data.settings = read_step_settings(folder, prefix, it)
    data.label = f"{folder.name}/{prefix}"
    model = Path(f"{stem}_model.star")
    blocks = read_star(model) if model.is_file() else {}
    general = blocks.get("model_general")
    dim = int(general["rlnReferenceDimensionality"].iloc[0]) if general is not None and \
        "rlnReferenceDimensionality" in general else 2
    if dim == 2 and Path(f"{stem}_classes.mrcs").is_file():
        data.class_images = read_mrc(f"{stem}_classes.mrcs")[0]
        data.sources.append(f"{stem.name}_classes.mrcs")
        data.rot = data.tilt = None
    _class_maps(data, folder, prefix, it)
    if general is not None:
        n, px = int(general["rlnOriginalImageSize"].iloc[0]), float(general["rlnPixelSize"].iloc[0])
        _add_gold_standard_fsc(data, blocks, n, px)
        if not data.parameters:
            data.parameters = {k: v for k, v in general.iloc[0].items()}


def _collect_postprocess(data: ReportData, folder: Path) -> None:
    from ..io import read_mrc, read_star
    for star in sorted(folder.rglob("*postprocess*.star")):
        blocks = read_star(star)
        fsc_t, general = blocks.get("fsc"), blocks.get("general")
        if fsc_t is None or "rlnFourierShellCorrelationCorrected" not in fsc_t:
            continue
        rel = star.relative_to(folder)
        name = rel.parent.name if star.stem == "postprocess" and rel.parent.parts else rel.stem
        res = float(general["rlnFinalResolution"].iloc[0]) if general is not None and \
            "rlnFinalResolution" in general else float("nan")
        freq = fsc_t["rlnResolution"].to_numpy(float)
        data.fsc.append({"name": name, "freq_per_A": freq, "postprocess": True,
                         "fsc": fsc_t["rlnFourierShellCorrelationCorrected"].to_numpy(float),
                         "resolution_A": res, "resolution_text": resolution_text(res, 1.0 / freq.max())})
        sharpened = star.with_suffix(".mrc")
        if sharpened.is_file():
            data.maps[name] = read_mrc(sharpened)[0]
        data.sources.append(rel.as_posix())


def collect_directory(folder) -> ReportData:
    """Read a run folder into a :class:`ReportData` (see the module text for what is read)."""
    from ..errors import CryolabInputError
    from ..provenance import read_run
    folder = Path(folder)
    run = read_run(folder)
    data = ReportData(title=f"cryolab {run.get('command', 'run')}: {folder.resolve().name}", run=run,
                      parameters=dict(run.get("parameters", {})), results=dict(run.get("results", {})))
    data.parameters.pop("argv", None)
    if run:
        data.command = f"cd {run.get('cwd', '.')}\n{run.get('command_line', '')}"
        data.sources.append("run.json")
    latest = _latest_classification(folder)
    if latest:
        _collect_classification(data, *latest)
        if not data.history and run.get("iterations"):
            data.history = run["iterations"]
        _merge_times(data.history, run.get("iterations", []))
        _other_class_maps(data, folder, latest)
        data.steps = _other_steps(folder, latest)
    _collect_postprocess(data, folder)
    data.extra = list(heterogeneity_sections(folder)) + list(variability_sections(folder))
    if not (run or latest or data.fsc or data.extra):
        raise CryolabInputError("nothing to report: no run.json, <prefix>_itNNN_data.star, postprocess.star "
                                "or heterogeneity results here", path=folder)
    return data


def _other_steps(folder: Path, shown) -> list:
    """A :class:`ReportData` for every other run in ``folder``, its sub-folders and theirs (the
    demo's ``class3d/`` and the refinement in ``states/80S/``), labelled with their folder."""
    steps = []
    for level in ("", "*/", "*/*/"):
        for sub, prefix, it in _classifications(folder, level):
            if (sub, prefix, it) == shown:
                continue
            step = ReportData()
            _collect_classification(step, sub, prefix, it)
            step.label = f"{sub.relative_to(folder).as_posix()}/{prefix}".lstrip("./")
            step.maps = {}
            steps.append(step)
    return steps


def _merge_times(history, iterations):
    times = {it["iteration"]: it.get("time_s") for it in iterations}
    for h in history:
        if h.get("time_s") is None and h["iteration"] in times:
            h["time_s"] = times[h["iteration"]]


def collect_session(session) -> ReportData:
    """A live Session (2D or 3D classification) as :class:`ReportData`."""
    from ..backend import backend_name
    from ..provenance import environment
    from ..settings import command_line
    s = session.settings
    star = session.particles.star_path or "particles.star"
    refs = np.asarray(session.references)
    three_d = session.dim == 3
    return ReportData(
        title=f"cryolab session: {s.K} classes, iteration {session.iteration}",
        run={**environment(), "backend": backend_name(session.xp)}, parameters=asdict(s),
        command=command_line("class3d" if three_d else "class2d", s, star,
                                 "Class3D/run" if three_d else "Class2D/run"),
        history=[{"iteration": h.iteration, "loglik": h.loglik, "time_s": h.time_s,
                  "class_distribution": list(h.class_distribution)} for h in session.history],
        class_images=None if three_d else refs,
        maps={f"class {k + 1}": r for k, r in enumerate(refs)} if three_d else {},
        pmax=np.asarray(session.pmax), psi=np.asarray(session.psi), classes=np.asarray(session.classes) + 1,
        optics=optics_summary(session.particles.star_path) if session.particles.star_path else {},
        rot=session.eulers[:, 0].copy() if three_d else None, tilt=session.eulers[:, 1].copy() if three_d else None,
        results={"class_sizes": np.bincount(session.classes[session.classes >= 0],
                                            minlength=s.K).tolist()})


# --------------------------------------------------------------------------- HTML

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.5em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 8px;
text-align:left;vertical-align:top}pre{background:#f4f4f4;padding:.6em;overflow-x:auto;white-space:pre-wrap}
img{max-width:100%}.muted{color:#777;font-size:.85em}"""


def _value(v) -> str:
    """A JSON-like value as HTML (dicts and lists of dicts become tables)."""
    if isinstance(v, dict):
        return _table(v.items())
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        cols = list(dict.fromkeys(k for x in v for k in x))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        rows = "".join("<tr>" + "".join(f"<td>{_value(x.get(c, ''))}</td>" for c in cols) + "</tr>" for x in v)
        return f"<table><tr>{head}</tr>{rows}</table>"
    if isinstance(v, (list, tuple)):
        return html.escape(", ".join(_fmt(x) for x in v))
    return html.escape(_fmt(v))


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _table(items) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_value(v)}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def _img(b64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def _step_sections(d: ReportData, label: str):
    """The sections of one run (a step): its data, settings and figures, titled with ``label``."""
    head = f"{label}: " if label else ""
    if d.optics:
        yield f"{head}particles and optics", _table(d.optics.items())
    if d.settings:
        yield f"{head}settings (units; RELION's flag in brackets)", _table(settings_rows(d.settings))
    if d.class_images is not None:
        dist = d.history[-1]["class_distribution"] if d.history else None
        yield f"{head}class averages", _img(fig_class_averages(d.class_images, dist), "class averages")
    if d.history:
        yield f"{head}convergence", (_img(fig_history(d.history), "class distribution and log-likelihood")
                                     + f"<p class='muted'>{CONVERGENCE_TEXT}</p>")
    if d.pmax is not None:
        yield f"{head}Pmax", _img(fig_histogram(d.pmax, "Pmax (max. posterior probability)",
                                                "Pmax histogram", 25, (0, 1)), "Pmax histogram")
    if d.rot is not None and d.tilt is not None and np.ptp(d.tilt) > 0:
        yield f"{head}angular distribution (viewing directions)", _img(fig_rot_tilt(d.rot, d.tilt), "rot/tilt scatter")
    elif d.psi is not None:
        yield f"{head}angular distribution", _img(fig_histogram(d.psi % 360, "psi (°)", "in-plane angle",
                                                                36, (0, 360)), "psi histogram")
    curves = [c for c in d.fsc if not c.get("postprocess")]
    if curves:
        yield f"{head}FSC per refined map (gold standard, threshold 0.143)", _fsc_html(curves, d.optics)


def _fsc_html(curves, optics) -> str:
    nyquist = optics.get("Nyquist resolution (Å)")
    res = {c["name"]: c.get("resolution_text") or resolution_text(c["resolution_A"], nyquist) for c in curves}
    return _img(fig_fsc(curves), "FSC curves") + _table(res.items())


def _sections(d: ReportData):
    """``(title, html)`` pairs in report order."""
    if d.results:
        yield "Results", _value(readable(d.results))
        if any(isinstance(s, dict) and "converged" in s for s in d.results.get("states", [])):
            yield "How to read the refinement's results", f"<p>{REFINE_TEXT}</p>"
    if d.parameters:
        yield "Parameters", _table(settings_rows(d.parameters) if d.run else d.parameters.items())
    if d.maps:
        yield "Maps: central slices (3D classes, post-processed maps)", _img(fig_central_slices(d.maps), "central slices")
    yield from _step_sections(d, d.label)
    for step in d.steps:
        yield from _step_sections(step, step.label)
    post = [c for c in d.fsc if c.get("postprocess")]
    if post:
        yield "Post-processed maps: FSC (corrected for the mask, threshold 0.143)", _fsc_html(post, d.optics)
    for title, figures, stats in d.extra:
        yield title, "".join(_img(f, title) for f in figures) + _table(stats.items())
    if d.command:
        yield "Reproduce", f"<pre>{html.escape(d.command)}</pre>"
    env = {k: d.run[k] for k in ("cryolab_version", "git_commit", "backend", "host", "platform", "python",
                                 "numpy", "dependencies", "started", "wall_time_s", "steps_s") if k in d.run}
    if env:
        yield "Environment", _table(env.items())
    if d.run.get("inputs_sha256"):
        yield "Inputs (sha256)", _table(d.run["inputs_sha256"].items())


def render_html(data: ReportData) -> str:
    """The report as one HTML string (no external files)."""
    from .. import __version__
    body = "".join(f"<h2>{html.escape(t)}</h2>\n{h}\n" for t, h in _sections(data))
    src = f"<p class='muted'>built from: {html.escape(', '.join(data.sources))}</p>" if data.sources else ""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(data.title)}</h1>{src}\n{body}"
            f"<p class='muted'>cryolab {__version__}</p></body></html>\n")


def _write(text: str, path) -> Path:
    from ..io._files import atomic_path
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
    return path


def directory_report(folder, path=None) -> Path:
    """Write the report of a run folder (default ``folder/report.html``); returns its path."""
    return _write(render_html(collect_directory(folder)), path or Path(folder) / "report.html")


def session_report(session, path=None):
    """Report of a live Session: written to ``path`` (returns the path), or returned as an HTML
    string when ``path`` is None (``IPython.display.HTML(session_report(session))``)."""
    text = render_html(collect_session(session))
    return text if path is None else _write(text, path)
