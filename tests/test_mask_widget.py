"""MaskEditor: its mask is the cryolab.masks mask of the controls' values, and its views follow it.

Plain pytest, no browser: setting ``slider.value`` and ``button.click()`` fire the same handlers
as a user. The demo 80S ribosome map, 64 px at 6 A/px.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from cryolab import masks  # noqa: E402
from cryolab.data import load_demo  # noqa: E402
from cryolab.errors import CryolabInputError  # noqa: E402
from cryolab.io import read_mrc  # noqa: E402
from cryolab.widgets import MaskEditor  # noqa: E402

PX = 6.0
N = 64
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def volume():
    return load_demo().volumes["80S"]


def _set_centre(w, centre):
    for s, c in zip(w.centre, centre):
        s.value = c


def _fractions_text(volume, mask):
    pos = np.clip(volume, 0, None)
    box, dens = float(mask.mean()), float((pos * mask).sum() / pos.sum())
    return f"<b>{100 * box:.1f} %</b> of the box, <b>{100 * dens:.1f} %</b> of the map's positive density"


def test_sliders_give_the_sphere_mask_and_the_fractions(volume):
    w = MaskEditor(volume, PX)
    assert w.mask.shape == (N, N, N) and w.mask.dtype == np.float32
    np.testing.assert_array_equal(w.mask, masks.sphere_mask(N, PX, 48.0, (0.0, 0.0, 0.0), masks.SOFT_EDGE_A))
    _set_centre(w, (-39.0, -108.0, -69.0))
    w.radius.value, w.soft_edge.value = 42.0, 9.0
    expected = masks.sphere_mask(N, PX, 42.0, (-39.0, -108.0, -69.0), 9.0)
    np.testing.assert_array_equal(w.mask, expected)
    np.testing.assert_array_equal(w.centre_A, [-39.0, -108.0, -69.0])
    assert _fractions_text(volume, expected) in w.caption.value
    assert w.fractions["box"] == pytest.approx(float(expected.mean()))
    # a threshold change does not touch a sphere (no recomputation, same array)
    before = w.mask
    w.threshold.value = 0.5
    assert w.mask is before


def test_centre_on_density_moves_to_the_centre_of_mass(volume):
    w = MaskEditor(volume, PX, centre_A=(-30.0, -100.0, -60.0), radius_A=50.0)
    com = masks.centre_of_mass_A(volume * w.mask, PX)
    w.centre_button.click()
    np.testing.assert_allclose(w.centre_A, com, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(w.mask, masks.sphere_mask(N, PX, 50.0, tuple(w.centre_A)))
    assert w.settings["centre_A"] == pytest.approx(list(com))


def test_ellipsoid_and_threshold_shapes(volume):
    w = MaskEditor(volume, PX)
    w.shape.value = "ellipsoid"
    for s, r in zip(w.radii, (30.0, 45.0, 60.0)):
        s.value = r
    _set_centre(w, (12.0, -24.0, 36.0))
    np.testing.assert_array_equal(w.mask, masks.ellipsoid_mask(N, PX, (30.0, 45.0, 60.0), (12.0, -24.0, 36.0)))
    assert w.radius.layout.display == "none" and w.radii[0].layout.display == ""
    w.shape.value = "threshold"
    w.threshold.value, w.extend.value, w.soft_edge.value = 0.3, 6.0, 6.0
    expected = masks.threshold_mask(volume, 0.3, PX, extend_A=6.0, soft_edge_A=6.0)
    np.testing.assert_array_equal(w.mask, expected)
    assert _fractions_text(volume, expected) in w.caption.value
    assert w.threshold.layout.display == "" and w.radii[0].layout.display == "none"


def test_views_are_pngs_through_the_centre_that_change_when_it_moves(volume):
    w = MaskEditor(volume, PX)
    png = bytes(w.panel.value)
    assert png.startswith(PNG) and len(png) > 1000
    _set_centre(w, (30.0, -42.0, 18.0))          # voxels 32 + 5, 32 - 7, 32 + 3
    assert bytes(w.panel.value).startswith(PNG) and bytes(w.panel.value) != png
    np.testing.assert_array_equal(w.centre_index, [37, 25, 35])
    np.testing.assert_array_equal(w.sections["xy"], volume[35])
    np.testing.assert_array_equal(w.sections["xz"], volume[:, 25, :])
    np.testing.assert_array_equal(w.sections["yz"], volume[:, :, 37])
    np.testing.assert_array_equal(w.mask_sections["xy"], w.mask[35])
    png = bytes(w.panel.value)
    w.centre[2].value = -60.0
    assert bytes(w.panel.value) != png


def test_settings_are_json_and_round_trip(volume):
    w = MaskEditor(volume, PX, shape="ellipsoid", centre_A=(6.0, 12.0, -18.0), radii_A=(40.0, 30.0, 50.0),
                   soft_edge_A=8.0, threshold=0.25, extend_A=3.0)
    settings = json.loads(json.dumps(w.settings))
    assert settings == w.settings
    v = MaskEditor.from_settings(volume, PX, settings)
    assert v.settings == w.settings
    np.testing.assert_array_equal(v.mask, w.mask)
    w.shape.value = "threshold"
    np.testing.assert_array_equal(MaskEditor.from_settings(volume, PX, w.settings).mask, w.mask)
    with pytest.raises(CryolabInputError):
        MaskEditor.from_settings(volume, PX, {"radius": 3.0})
    with pytest.raises(CryolabInputError):
        MaskEditor(volume, PX, shape="cube")


def test_save_writes_the_mask(volume, tmp_path):
    path = tmp_path / "rack1_mask.mrc"
    w = MaskEditor(volume, PX, centre_A=(-39.0, -108.0, -69.0), radius_A=40.0, save_path=str(path))
    w.save_button.click()
    assert "wrote" in w.status.value
    m, px = read_mrc(path)
    assert px == pytest.approx(PX)
    np.testing.assert_array_equal(m, w.mask)
    w.path.value = ""
    w.save_button.click()
    assert "no file name" in w.status.value
    assert w.save(tmp_path / "again.mrc") == tmp_path / "again.mrc"


def test_save_row_is_optional(volume):
    def has_save(w):
        return any(w.save_button in getattr(c, "children", ()) for c in w.children)
    assert has_save(MaskEditor(volume, PX)) and not has_save(MaskEditor(volume, PX, save_path=None))
