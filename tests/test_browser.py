"""Every course notebook runs and its widgets render in a real browser: JupyterLab + headless
Chromium (device pixel ratio 2), driven by Playwright.

One JupyterLab (free localhost port, random token) serves QUICK-mode copies of all course
notebooks for the module. For each notebook (one test each) a fresh page opens it, runs all
cells with its kernel and checks:

- no cell raised, and a notebook that imports ``cryolab.widgets`` displayed a widget (the same
  checks as ``tests/test_notebooks.py``'s QUICK run, which then skips that notebook instead of
  executing it a second time);
- every widget view rendered (no "Error displaying widget"), and every widget image that draws a
  figure carries at least ``devicePixelRatio`` (2) image pixels per CSS pixel (sharp, not
  stretched); a 3D map view (nglview) draws a WebGL canvas;
- no two texts overlap in any figure a widget drew (their boxes are recorded by the widgets'
  ``ImagePanel.text_boxes`` and measured in the kernel);
- no browser-console error mentions a widget module (a frontend/backend version mismatch).

Notebooks 01 and 02 also press arrow keys on a slider (browser -> kernel -> browser) and check
that the view changed; a last test clicks Step on a SessionDashboard beside an FSCViewer. A
screenshot of every widget goes to ``test-artifacts/`` (or ``$CRYOLAB_TEST_ARTIFACTS``) as
``browser-NN-widget-K.png``. Skipped when playwright, jupyterlab or a Chromium binary
(``$CHROME``, ``chromium``, ``chromium-browser``) is missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import test_notebooks as tnb
from cryolab.widgets.viewers import have_nglview

pytest.importorskip("jupyterlab")
sync_api = pytest.importorskip("playwright.sync_api")
nbformat = tnb.nbformat

ROOT = Path(__file__).resolve().parents[1]
CHROME = next((p for p in (os.environ.get("CHROME"), shutil.which("chromium"),
                           shutil.which("chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(CHROME is None, reason="no Chromium binary (set $CHROME)")
NOTEBOOK_TIMEOUT_S = 240        # Run All of one QUICK notebook (tests/test_notebooks.py allows 150 s a cell)

WIDGET_ERROR = re.compile(r"widget|module|nglview|jupyter-widgets|Could not create", re.IGNORECASE)
KERNEL_IDLE_JS = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
# done: the kernel is idle and every code cell ran, or a cell raised (Run All stops there)
ALL_RUN_JS = """() => { const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session.kernel;
  const cells = [...w.content.model.cells].filter(c => c.type === 'code');
  const failed = cells.some(c => c.toJSON().outputs.some(o => o.output_type === 'error'));
  return k.status === 'idle' && (failed || cells.every(c => c.executionCount !== null)); }"""
NOTEBOOK_JSON_JS = "() => window.jupyterapp.shell.currentWidget.content.model.toJSON()"
SHUTDOWN_JS = "() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()"
# the view of each widget a cell displayed (not those nested in an Output widget); nglview adds
# an empty one (its colour registry) when imported
WIDGET_VIEWS = ".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output.lm-Panel > .lm-Widget"
BROKEN_WIDGET = ".jp-OutputArea-output:text('Error displaying widget')"
# image pixels per CSS pixel of every widget image with a size; null while one is still loading
PIXEL_RATIOS_JS = """() => { const imgs = [...document.querySelectorAll('.jp-OutputArea img.widget-image')]
  .filter(img => img.clientWidth > 0 && img.getAttribute('src'));
  if (imgs.some(img => !img.complete || img.naturalWidth === 0)) return null;
  return {dpr: window.devicePixelRatio, ratios: imgs.map(img => img.naturalWidth / img.clientWidth)}; }"""
KERNEL_PRINT_JS = """async (code) => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const f = k.requestExecute({code, silent: false, store_history: false}); let out = '';
  f.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
  await f.done; return out; }"""
# run in the notebook's kernel: overlapping texts of every figure a live widget drew, by panel
OVERLAPS = """\
def _cryolab_overlaps():
    import json
    from ipywidgets.widgets.widget import _instances
    from cryolab.widgets._display import ImagePanel, overlapping_text
    import types
    names = {}
    for var, obj in list(globals().items()):
        if isinstance(obj, ImagePanel):
            names[obj.model_id] = var
        if var.startswith('_') or isinstance(obj, (types.ModuleType, type)) or not hasattr(obj, '__dict__'):
            continue
        for attr, value in vars(obj).items():
            for key, panel in (value.items() if isinstance(value, dict) else [(None, value)]):
                if isinstance(panel, ImagePanel):
                    names[panel.model_id] = f"{var}.{attr}" + (f"[{key!r}]" if key is not None else "")
    panels = [w for w in list(_instances.values()) if isinstance(w, ImagePanel) and w.text_boxes]
    found = {names.get(p.model_id, f"ImagePanel {p.model_id[:8]} ({p.text_boxes[0][0]!r}, ...)"): overlapping_text(p.text_boxes)
             for p in panels}
    print(json.dumps({"panels": len(panels), "overlaps": {k: v for k, v in found.items() if v}}))
_cryolab_overlaps()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifacts() -> Path:
    path = Path(os.environ.get("CRYOLAB_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``(base_url, token, folder)`` of one JupyterLab serving QUICK copies of the course notebooks."""
    tmp = tmp_path_factory.mktemp("lab")
    nb_dir = tmp / "notebooks"
    nb_dir.mkdir()
    for path in tnb.NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tnb._force_quick(nb)
        nbformat.write(nb, nb_dir / path.name)
    settings = tmp / "settings" / "@jupyterlab"
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},   # every cell in the DOM
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}
                           }.items():          # (no news toast over the screenshots)
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{plugin}.jupyterlab-settings").write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nb_dir}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp / "lab.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=nb_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if server.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited: {(tmp / 'lab.log').read_text()[-2000:]}")
        yield base, token, nb_dir
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROME, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def _lab_page(browser, height: int = 1200):
    """A page at device pixel ratio 2 with its console collected into ``logs``; on leaving, asserts
    that no console error mentions a widget module (a frontend/backend version mismatch)."""
    logs = []
    context = browser.new_context(viewport={"width": 1400, "height": height}, device_scale_factor=2)
    page = context.new_page()
    page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: logs.append(f"error: {e}"))
    try:
        yield page, logs
    finally:
        with contextlib.suppress(Exception):
            page.evaluate(SHUTDOWN_JS)      # free the kernel's memory before the next notebook
        context.close()
    widget_errors = [line for line in logs if line.startswith("error") and WIDGET_ERROR.search(line)]
    assert not widget_errors, widget_errors[:5]


def _run_notebook(page, base, token, name, timeout_s: float = 60):
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset")
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(500)
    page.wait_for_function(ALL_RUN_JS, timeout=timeout_s * 1000, polling=500)


def _check_widget_images(page, name: str) -> int:
    """Every widget image with a size has at least ``devicePixelRatio`` (2) image pixels per CSS
    pixel (sharp, not stretched). Returns how many were checked."""
    measured = None
    for _ in range(40):
        measured = page.evaluate(PIXEL_RATIOS_JS)
        if measured is not None:
            break
        page.wait_for_timeout(250)
    assert measured is not None, f"{name}: widget images still loading after 10 s"
    assert measured["dpr"] >= 2
    low = [r for r in measured["ratios"] if r < measured["dpr"] - 0.01]
    assert not low, f"{name}: widget images stretched (image px per CSS px {low}, device pixel ratio {measured['dpr']})"
    return len(measured["ratios"])


def _screenshot_widgets(page, name: str) -> int:
    """A screenshot of every displayed widget, ``browser-NAME-widget-K.png``; how many were saved."""
    outputs = page.locator(WIDGET_VIEWS)
    saved = 0
    for i in range(outputs.count()):
        out = outputs.nth(i)
        if out.is_visible() and out.bounding_box()["height"] > 2:
            out.screenshot(path=str(_artifacts() / f"browser-{name}-widget-{i}.png"))
            saved += 1
    return saved


def _image_src(page) -> str:
    return page.locator(".jp-OutputArea img.widget-image").first.get_attribute("src") or ""


def _interact_02(page) -> None:
    """The projection-slice explorer: ArrowRight on rot moves its readout to 31 and redraws the figure."""
    readouts = page.locator(".jp-OutputArea .widget-slider .widget-readout")
    assert readouts.first.inner_text().strip() == "30"  # rot of the explorer
    before = _image_src(page)
    assert before.startswith("blob:") or before.startswith("data:")
    page.locator(".jp-OutputArea .widget-slider .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "() => document.querySelector('.jp-OutputArea .widget-slider .widget-readout').innerText.trim() === '31'",
        timeout=20_000)
    page.wait_for_function(
        "(src) => document.querySelector('.jp-OutputArea img.widget-image').getAttribute('src') !== src",
        arg=before, timeout=20_000)


def _interact_01(page) -> None:
    """The map viewer: +1 sigma on the threshold slider changes the isosurface (or the contours)."""
    viewer = page.locator(".jp-OutputArea canvas" if have_nglview() else ".jp-OutputArea img.widget-image").first
    viewer.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let the isosurface draw
    drawn = viewer.screenshot()
    page.locator(".jp-OutputArea .widget-slider .noUi-handle").first.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    for _ in range(40):
        page.wait_for_timeout(250)
        if viewer.screenshot() != drawn:
            return
    pytest.fail("the map view did not change with the threshold slider")


INTERACTIONS = {"01": _interact_01, "02": _interact_02}


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S + 90)
@pytest.mark.parametrize("path", tnb.NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_renders_in_jupyterlab(lab, chromium, path):
    base, token, _ = lab
    number = path.name[:2]
    with _lab_page(chromium) as (page, logs):
        _run_notebook(page, base, token, path.name, NOTEBOOK_TIMEOUT_S)
        nb = nbformat.from_dict(page.evaluate(NOTEBOOK_JSON_JS))
        tnb.check_outputs(nb, path.name)            # no cell raised; widgets displayed where imported
        n_widgets = sum(tnb.WIDGET_MIME in o.get("data", {}) for o in tnb.outputs_of(nb))
        views, broken = page.locator(WIDGET_VIEWS), page.locator(BROKEN_WIDGET)
        for _ in range(60):         # the widget manager renders the views after the outputs arrive
            if views.count() + broken.count() >= n_widgets:
                break
            page.wait_for_timeout(500)
        assert broken.count() == 0, broken.first.inner_text()[:500]
        assert views.count() == n_widgets, f"{path.name}: {views.count()} of {n_widgets} widgets rendered"
        page.wait_for_timeout(500)
        n_images = _check_widget_images(page, number)
        n_canvas = page.locator(f"{WIDGET_VIEWS} canvas").count()
        if n_widgets:
            assert n_images + n_canvas >= 1, f"{path.name}: no widget drew a figure or a 3D view"
        if n_canvas:
            sizes = page.evaluate(f"() => [...document.querySelectorAll('{WIDGET_VIEWS} canvas')]"
                                  ".map(c => c.width * c.height)")
            assert max(sizes) > 0, "the 3D view's canvas has no pixels"
        report = json.loads(page.evaluate(KERNEL_PRINT_JS, OVERLAPS).strip().splitlines()[-1])
        assert not report["overlaps"], f"{path.name}: overlapping texts {report['overlaps']}"
        if number in INTERACTIONS:
            INTERACTIONS[number](page)
        assert _screenshot_widgets(page, number) >= min(n_widgets, 1)
        (_artifacts() / f"browser-{number}-console.json").write_text(json.dumps(logs, indent=1))
        tnb.RAN_IN_BROWSER.add(path.name)


DASHBOARD_NB = """\
import tempfile
from cryolab.data import load_demo
from cryolab.fourier import rescale
from cryolab.session import Session
from cryolab.simulate import simulate_views_2d
import numpy as np
from cryolab.widgets import FSCViewer, SessionDashboard
demo = load_demo()
sim = simulate_views_2d(rescale(demo.volumes["80S"], 32, ndim=3), 100, 2 * demo.pixel_size_A,
                        view_eulers=[[0, 0], [0, 90]], snr=0.5, seed=3, out_dir=tempfile.mkdtemp(), name="v")
dash = SessionDashboard(Session(sim.star_path, K=2, mode="map", seed=0))
display(dash)
shells = np.arange(17)
fsc_viewer = FSCViewer({"half maps": 1 / (1 + np.exp((shells - 10) / 1.5)), "map vs truth": np.ones(17)}, 32,
                       2 * demo.pixel_size_A, criteria={"map vs truth": 0.5})
fsc_viewer
"""


@pytest.mark.timeout(150)
def test_session_dashboard_steps_in_jupyterlab(lab, chromium):
    """Step clicked in the browser runs an iteration in the kernel's background thread; the
    status line and the panels it redraws reach the browser, sharp and without overlapping texts."""
    from nbformat.v4 import new_code_cell, new_notebook
    base, token, nb_dir = lab
    nbformat.write(new_notebook(cells=[new_code_cell(DASHBOARD_NB)],
                                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}),
                   nb_dir / "dashboard.ipynb")
    with _lab_page(chromium, 2000) as (page, logs):
        _run_notebook(page, base, token, "dashboard.ipynb")
        status = page.locator(".jp-OutputArea .widget-html", has_text="iteration 0")
        status.wait_for(timeout=30_000)
        page.wait_for_selector(".jp-OutputArea img.widget-image", timeout=30_000)
        before = _image_src(page)
        page.locator(".jp-OutputArea button.widget-button", has_text="Step").click()
        page.locator(".jp-OutputArea .widget-html", has_text="iteration 1").filter(
            has_text="idle").wait_for(timeout=60_000)
        assert _image_src(page) != before
        assert _check_widget_images(page, "dashboard") >= 4        # FSC viewer and the three dashboard panels
        report = json.loads(page.evaluate(KERNEL_PRINT_JS, OVERLAPS).strip().splitlines()[-1])
        assert report["panels"] >= 4 and not report["overlaps"], report
        _screenshot_widgets(page, "dashboard")
