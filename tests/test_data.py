"""The embedded demo maps: shapes, frames, state differences and reproducibility from the models."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import reference_file
from cryolab.data import list_demos, load_demo
from cryolab.errors import CryolabInputError

EXPECTED = {"ribosome": (64, 6.0, {"80S", "80S_noRACK1", "80S_noLso2", "60S"}),
            "toxin": (32, 4.0, {"AB5", "B5"})}
# state pairs: (full, partial, removed components, minimum fraction of the full map's mass removed)
PAIRS = [("ribosome", "80S", "80S_noRACK1", ["RACK1"], 0.005),
         ("ribosome", "80S", "80S_noLso2", ["Lso2"], 0.001),
         ("ribosome", "80S", "60S", ["40S_core", "RACK1", "Lso2"], 0.2),
         ("toxin", "AB5", "B5", ["A"], 0.1)]


def _centre_of_mass(v):
    w = np.clip(v, 0, None)
    return (np.indices(v.shape).reshape(3, -1) * w.ravel()).sum(1) / w.sum()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_demo_documented_shapes(name):
    box, pixel, states = EXPECTED[name]
    demo = load_demo(name)
    assert demo.box_size == box and demo.pixel_size_A == pixel
    assert set(demo.volumes) == states
    for v in demo.volumes.values():
        assert v.shape == (box, box, box) and v.dtype == np.float32
    full = max(demo.volumes.values(), key=lambda v: v.sum())
    assert full.max() == pytest.approx(1.0, abs=0.01)
    assert "CC0" in demo.source and demo.description
    assert list_demos() == sorted(EXPECTED)
    with pytest.raises(CryolabInputError):
        load_demo("nope")


@pytest.mark.parametrize("name, full, partial, removed, min_fraction", PAIRS)
def test_states_differ_where_chains_were_removed(name, full, partial, removed, min_fraction):
    demo = load_demo(name)
    diff = demo.volumes[full] - demo.volumes[partial]
    comp = sum(demo.components[c] for c in removed)
    np.testing.assert_allclose(diff, comp, atol=2e-3)
    assert diff.sum() / demo.volumes[full].sum() > min_fraction
    # the difference is localised: its mass sits where the removed chains are
    support = comp > 0.05 * comp.max()
    assert np.clip(diff, 0, None)[support].sum() > 0.8 * np.clip(diff, 0, None).sum()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_full_complex_centred(name):
    demo = load_demo(name)
    full = max(demo.volumes.values(), key=lambda v: v.sum())
    np.testing.assert_allclose(_centre_of_mass(full), demo.box_size // 2, atol=0.5)
    for v in demo.volumes.values():  # all states share the full complex's frame
        assert np.linalg.norm(_centre_of_mass(v) - demo.box_size // 2) < 0.15 * demo.box_size
    z, y, x = np.indices(full.shape) - demo.box_size // 2
    edge = np.sqrt(x ** 2 + y ** 2 + z ** 2) > demo.box_size // 2 - 2
    assert np.abs(full[edge]).max() < 0.05  # fits in the box with margin


@pytest.mark.parametrize("name, model", [("ribosome", "models/6zu5.cif.gz"), ("toxin", "1tii.pdb.gz")])
def test_rebuild_from_model_matches_shipped(name, model):
    pytest.importorskip("gemmi")
    from cryolab.data.build_demo import build_dataset
    path = reference_file(model)
    comps, meta = build_dataset(name, path)
    demo = load_demo(name)
    assert meta["pixel_size_A"] == demo.pixel_size_A and meta["box"] == demo.box_size
    for state, parts in demo.states.items():
        rebuilt = sum(comps[c] for c in parts)
        assert np.corrcoef(rebuilt.ravel(), demo.volumes[state].ravel())[0, 1] > 0.99


def test_removed_chain_sits_where_the_model_puts_it():
    """Independent of the build code: RACK1's atoms (chain SGG), placed in the frame where the
    complex's centre of mass is voxel N//2 (axes x, y, z -> array axes 2, 1, 0), lie at the
    centre of mass of the 80S - 80S_noRACK1 difference map."""
    gemmi = pytest.importorskip("gemmi")
    path = reference_file("models/6zu5.cif.gz")
    model = gemmi.read_structure(str(path))[0]
    atoms = [(a.pos.x, a.pos.y, a.pos.z, a.element.weight, ch.name) for ch in model for r in ch for a in r
             if not a.is_hydrogen()]
    xyz = np.array([a[:3] for a in atoms])
    mass = np.array([a[3] for a in atoms])
    rack1 = np.array([a[4] == "SGG" for a in atoms])
    com_all = (xyz * mass[:, None]).sum(0) / mass.sum()
    com_rack1 = (xyz[rack1] * mass[rack1, None]).sum(0) / mass[rack1].sum()
    demo = load_demo("ribosome")
    expected_zyx = ((com_rack1 - com_all) / demo.pixel_size_A + demo.box_size // 2)[::-1]
    diff = demo.volumes["80S"] - demo.volumes["80S_noRACK1"]
    np.testing.assert_allclose(_centre_of_mass(diff), expected_zyx, atol=0.5)
