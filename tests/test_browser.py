"""Widgets render in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Starts JupyterLab on a free localhost port (random token) serving a temporary copy of the course
notebooks, runs notebook 02 (projection-slice explorer), waits for the sliders and the figure,
presses an arrow key on a slider (browser -> kernel -> browser) and checks that the figure
changed; then runs notebook 01 and checks that the 3D map viewer draws (a canvas, when nglview is
installed). A second test clicks Step on a SessionDashboard: the iteration runs in a background
thread of the kernel and its status line and panels must reach the browser; there, beside an
FSCViewer, every widget image must carry at least 2 image pixels per CSS pixel (device pixel
ratio 2) and no two texts of the FSC and dashboard figures may overlap (their boxes, measured in
the kernel from the drawn figures). Fails on browser console errors about widget modules.
Screenshots of the pages and of every widget image go to
``test-artifacts/`` (or ``$CRYOLAB_TEST_ARTIFACTS``). Skipped when playwright, jupyterlab or a
Chromium binary (``$CHROME``, ``chromium``, ``chromium-browser``) is missing.
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

from cryolab.widgets.viewers import have_nglview

pytest.importorskip("jupyterlab")
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROME = next((p for p in (os.environ.get("CHROME"), shutil.which("chromium"),
                           shutil.which("chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(CHROME is None, reason="no Chromium binary (set $CHROME)")

WIDGET_ERROR = re.compile(r"widget|module|nglview|jupyter-widgets|Could not create", re.IGNORECASE)
KERNEL_IDLE_JS = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
ALL_RUN_JS = """() => { const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session.kernel;
  const cells = [...w.content.model.cells].filter(c => c.type === 'code');
  return k.status === 'idle' && cells.every(c => c.executionCount !== null); }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_notebooks(dest: Path) -> None:
    quick = re.compile(r'"QUICK\s*=\s*\w+')
    for nb in ("01_image_formation.ipynb", "02_projection_slice_theorem.ipynb"):
        text = (ROOT / "notebooks" / nb).read_text()
        (dest / nb).write_text(quick.sub('"QUICK = True', text))


@pytest.fixture
def lab(tmp_path):
    """``(base_url, token)`` of a JupyterLab serving a copy of notebooks 01 and 02."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    _copy_notebooks(nb_dir)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nb_dir}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")
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
            pytest.fail(f"JupyterLab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _artifacts() -> Path:
    path = Path(os.environ.get("CRYOLAB_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_notebook(page, base, token, name):
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset")
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_timeout(500)
    page.wait_for_function(ALL_RUN_JS, timeout=60_000, polling=250)


@contextlib.contextmanager
def _lab_page(height: int):
    """A headless Chromium page with its console collected into ``logs``; on leaving, asserts
    that no console error mentions a widget module (a frontend/backend version mismatch)."""
    logs = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROME, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": height})
            page.on("console", lambda m: logs.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: logs.append(f"error: {e}"))
            yield page, logs
        finally:
            browser.close()
    widget_errors = [line for line in logs if line.startswith("error") and WIDGET_ERROR.search(line)]
    assert not widget_errors, widget_errors[:5]


KERNEL_PRINT_JS = """async (code) => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const f = k.requestExecute({code}); let out = '';
  f.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
  await f.done; return out; }"""
PIXEL_RATIOS_JS = """() => [...document.querySelectorAll('.jp-OutputArea img.widget-image')]
  .filter(img => img.clientWidth > 0).map(img => img.naturalWidth / img.clientWidth)"""


def _check_widget_images(page, name: str) -> int:
    """Every widget image on the page has at least 2 image pixels per CSS pixel (sharp at device
    pixel ratio 2, not stretched); each is saved to the artefacts. Returns how many were checked."""
    ratios = page.evaluate(PIXEL_RATIOS_JS)
    assert ratios and min(ratios) >= 1.99, ratios
    images = page.locator(".jp-OutputArea img.widget-image")
    for i in range(images.count()):
        if images.nth(i).is_visible():
            images.nth(i).screenshot(path=str(_artifacts() / f"widget-{name}-{i}.png"))
    return len(ratios)


def _image_src(page) -> str:
    return page.locator(".jp-OutputArea img.widget-image").first.get_attribute("src") or ""


@pytest.mark.timeout(150)
def test_widgets_render_and_respond_in_jupyterlab(lab):
    base, token = lab
    t0 = time.monotonic()
    shots = _artifacts()
    with _lab_page(2400) as (page, logs):
        _run_notebook(page, base, token, "02_projection_slice_theorem.ipynb")
        page.wait_for_selector(".jp-OutputArea .widget-slider", timeout=30_000)
        page.wait_for_selector(".jp-OutputArea img.widget-image", timeout=30_000)
        assert page.locator(".jp-OutputArea .jupyter-widgets").count() > 3
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
        page.screenshot(path=str(shots / "browser-02-projection-slice.png"), full_page=True)
        assert _check_widget_images(page, "02") >= 1

        _run_notebook(page, base, token, "01_image_formation.ipynb")
        viewer = page.locator(".jp-OutputArea canvas" if have_nglview()
                              else ".jp-OutputArea img.widget-image").first
        viewer.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)  # let the isosurface draw
        drawn = viewer.screenshot()
        page.locator(".jp-OutputArea .widget-slider .noUi-handle").first.focus()
        for _ in range(10):  # threshold +1 sigma: the surface (or contours) must change
            page.keyboard.press("ArrowRight")
        for _ in range(40):
            page.wait_for_timeout(250)
            if viewer.screenshot() != drawn:
                break
        else:
            pytest.fail("the map view did not change with the threshold slider")
        page.screenshot(path=str(shots / "browser-01-map-viewer.png"), full_page=True)
        if not have_nglview():
            _check_widget_images(page, "01")
        (shots / "browser-console.json").write_text(json.dumps(logs, indent=1))
    assert time.monotonic() - t0 < 90


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
# measured in the kernel from the figures the widgets drew: pairs of texts whose boxes overlap
OVERLAPS = """\
import json
from cryolab.widgets._display import overlapping_text
panels = {"fsc": fsc_viewer.panel, **dash.panels}
print(json.dumps({name: overlapping_text(p.text_boxes) for name, p in panels.items()}))
"""


@pytest.mark.timeout(150)
def test_session_dashboard_steps_in_jupyterlab(lab, tmp_path):
    """Step clicked in the browser runs an iteration in the kernel's background thread; the
    status line and the panels it redraws reach the browser."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    base, token = lab
    nbformat.write(new_notebook(cells=[new_code_cell(DASHBOARD_NB)],
                                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}),
                   tmp_path / "notebooks" / "dashboard.ipynb")
    t0 = time.monotonic()
    with _lab_page(2000) as (page, logs):
        _run_notebook(page, base, token, "dashboard.ipynb")
        status = page.locator(".jp-OutputArea .widget-html", has_text="iteration 0")
        status.wait_for(timeout=30_000)
        page.wait_for_selector(".jp-OutputArea img.widget-image", timeout=30_000)
        before = _image_src(page)
        page.locator(".jp-OutputArea button.widget-button", has_text="Step").click()
        page.locator(".jp-OutputArea .widget-html", has_text="iteration 1").filter(
            has_text="idle").wait_for(timeout=60_000)
        assert _image_src(page) != before
        page.screenshot(path=str(_artifacts() / "browser-session-dashboard.png"), full_page=True)
        assert _check_widget_images(page, "dashboard") >= 4        # FSC viewer and the three dashboard panels
        overlaps = json.loads(page.evaluate(KERNEL_PRINT_JS, OVERLAPS).strip().splitlines()[-1])
        assert overlaps == {"fsc": [], "curves": [], "classes": [], "spectra": []}, overlaps
    assert time.monotonic() - t0 < 100
