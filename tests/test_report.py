"""HTML reports: one self-contained file that parses, with embedded PNG figures, built from a
live Session or from the files of a run folder (RELION-named, with or without run.json), and a
rendered look with headless Chromium (skipped when it is not installed)."""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from cryolab.errors import CryolabInputError
from cryolab.report import collect_directory, directory_report
from cryolab.session import Session
from cryolab.simulate import simulate_particles

DATA_PNG = "data:image/png;base64,"


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.external = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs.get("src", ""))
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.external.append(tag)


def count_embedded_images(text: str) -> int:
    """Number of ``<img src="data:image/png;base64,...">`` (asserting the HTML is self-contained)."""
    p = _Images()
    p.feed(text)
    p.close()
    assert not p.external, "the report must not load external files"
    assert all(s.startswith(DATA_PNG) and len(s) > 200 for s in p.sources), "non-embedded image"
    return len(p.sources)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from cryolab.data import load_demo
    out = tmp_path_factory.mktemp("session")
    demo = load_demo("toxin")
    sim = simulate_particles(demo.volumes, 100, demo.pixel_size_A, snr=0.2, seed=2, out_dir=out)
    s = Session(str(sim.star_path), K=2, psi_step_deg=30, offset_range_px=2, seed=0)
    s.step()
    s.save(out / "c2d")
    return s, out


def test_session_report_string_and_file(session, tmp_path):
    s, _ = session
    from cryolab.report import session_report
    text = session_report(s)
    assert text.startswith("<!DOCTYPE html>") and "cryolab class2d --i" in text
    assert count_embedded_images(text) >= 4   # class averages, convergence, Pmax, psi
    path = session_report(s, tmp_path / "r.html")
    assert count_embedded_images(path.read_text()) == count_embedded_images(text)


def test_folder_without_run_json_is_reported_from_relion_files(session, tmp_path):
    _, out = session
    data = collect_directory(out / "c2d")
    assert data.class_images.shape == (2, 32, 32)
    assert [h["iteration"] for h in data.history] == [1]
    assert data.pmax.shape == (100,) and data.fsc == []
    path = directory_report(out / "c2d", tmp_path / "r.html")
    assert count_embedded_images(path.read_text()) >= 4


def test_fsc_and_maps_from_postprocess_files(tmp_path):
    from cryolab.validation import write_postprocess
    from cryolab.validation import postprocess, soft_sphere_mask
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(24, 24, 24)).astype(np.float32)
    halves = [signal + 0.5 * rng.normal(size=signal.shape).astype(np.float32) for _ in range(2)]
    result = postprocess(*halves, soft_sphere_mask(24, 10, 3), 3.0)
    (tmp_path / "stateA").mkdir()
    write_postprocess(result, tmp_path / "stateA" / "postprocess")
    data = collect_directory(tmp_path)
    assert [c["name"] for c in data.fsc] == ["stateA"]
    assert data.fsc[0]["resolution_A"] == pytest.approx(result.resolution_A)
    assert set(data.maps) == {"stateA"}
    text = directory_report(tmp_path).read_text()
    assert count_embedded_images(text) == 2   # central slices, FSC


def test_nothing_to_report(tmp_path):
    with pytest.raises(CryolabInputError, match="nothing to report"):
        collect_directory(tmp_path)


def test_demo_report_renders_in_chromium(tmp_path):
    """Render the quick demo's report to PNG (look at it: tests/output of this test's tmp folder)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed")
    from cryolab.cli.demo import run_demo
    run_demo(tmp_path / "demo", quick=True, progress=False, log=lambda *a: None)
    png = tmp_path / "report.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,3600", f"--screenshot={png}",
                    (tmp_path / "demo" / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert png.is_file() and png.stat().st_size > 50_000
    from matplotlib.image import imread
    img = imread(png)
    assert img.shape[:2] == (3600, 1200) and img[..., :3].std() > 0.05   # not a blank page
