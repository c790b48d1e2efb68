"""Masks against analytic shapes, brute-force distances and the demo's own component maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryolab.data import load_demo
from cryolab.errors import CryolabInputError
from cryolab.masks import (atoms_mask, centre_of_mass_A, check_mask, component_mask, ellipsoid_mask,
                           read_mask, soften, sphere_mask, threshold_mask, write_mask)

DATA = Path(__file__).resolve().parent / "data"


def test_sphere_volume_and_edge_profile():
    box, px, r, w = 48, 2.0, 30.0, 8.0
    m = sphere_mask(box, px, radius_A=r, soft_edge_A=w, centre_A=(4.0, -6.0, 2.0))
    inside = (m >= 1.0).sum() * px ** 3
    assert abs(inside / (4 / 3 * np.pi * r ** 3) - 1) < 0.01          # measured 0.07 %
    # along +x from the centre (voxel of x = 4 A is 24 + 2): edge values 0.5 + 0.5 cos(pi d / w)
    row = m[24 + 1, 24 - 3, 24 + 2:]
    d = np.arange(row.size) * px - r
    want = np.where(d <= 0, 1.0, np.where(d >= w, 0.0, 0.5 + 0.5 * np.cos(np.pi * np.clip(d / w, 0, 1))))
    np.testing.assert_allclose(row, want, atol=1e-6)


def test_rotated_ellipsoid_is_the_ellipsoid_with_swapped_axes():
    rot90z = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    a = ellipsoid_mask(32, 3.0, (30.0, 12.0, 18.0), soft_edge_A=0.0, rotation=rot90z)
    b = ellipsoid_mask(32, 3.0, (12.0, 30.0, 18.0), soft_edge_A=0.0)
    assert np.array_equal(a, b)


def test_threshold_mask_matches_brute_force_distances():
    rng = np.random.default_rng(0)
    vol = np.zeros((20, 20, 20), np.float32)
    vol[8:12, 6:9, 10:14] = 1 + rng.random((4, 3, 4))
    px, ext, w = 2.0, 3.0, 5.0
    m = threshold_mask(vol, 0.5, px, extend_A=ext, soft_edge_A=w)
    core = np.argwhere(vol >= 0.5)
    grid = np.argwhere(np.ones_like(vol, bool))
    d_core = np.sqrt(((grid[:, None, :] - core[None]) ** 2).sum(-1)).min(1) * px   # brute force, A
    grown = d_core < ext
    gpts = grid[grown]
    d_grown = np.sqrt(((grid[:, None, :] - gpts[None]) ** 2).sum(-1)).min(1) * px
    want = np.where(d_grown <= 0, 1.0, np.where(d_grown >= w, 0, 0.5 + 0.5 * np.cos(np.pi * np.clip(d_grown / w, 0, 1))))
    np.testing.assert_allclose(m.ravel(), want, atol=1e-6)


def test_component_mask_covers_rack1_and_little_else():
    d = load_demo()
    m = component_mask("RACK1")
    rack1, core60 = d.components["RACK1"], d.components["60S_core"]
    inside = (m * rack1).sum() / rack1.sum()
    assert inside > 0.985, inside                                 # measured 0.991
    assert (m * core60).sum() / core60.sum() < 0.005              # measured 0.0
    c = centre_of_mass_A(rack1 * (m > 0.5), d.pixel_size_A)
    assert np.linalg.norm(c - centre_of_mass_A(rack1, d.pixel_size_A)) < d.pixel_size_A


def test_atoms_mask_agrees_with_the_density_of_the_same_chains():
    """Chain A+C of 1TII by atom distances vs the demo's density of the same chains (gemmi's
    density calculator, an independent route): the binary regions overlap (Dice >= 0.8)."""
    pytest.importorskip("gemmi", reason="atomic models need gemmi (the 'models' extra)")
    d = load_demo("toxin")
    by_atoms = atoms_mask(DATA / "1tii.pdb.gz", ["A", "C"], d.box_size, d.pixel_size_A,
                          atom_radius_A=2.0, extend_A=0.0, soft_edge_A=0.0) > 0.5
    dens = d.components["A"]
    by_density = dens >= 0.1 * dens.max()
    dice = 2 * (by_atoms & by_density).sum() / (by_atoms.sum() + by_density.sum())
    assert dice >= 0.8, dice          # measured 0.874
    with pytest.raises(CryolabInputError, match="no atoms in chains"):
        atoms_mask(DATA / "1tii.pdb.gz", ["Q"], d.box_size, d.pixel_size_A)


def test_bad_masks_are_refused(tmp_path):
    good = sphere_mask(16, 4.0, 20.0, soft_edge_A=4.0)
    assert check_mask(good, 16, 4.0, 4.0).dtype == np.float32
    with pytest.raises(CryolabInputError, match="need \\(20, 20, 20\\)"):
        check_mask(good, 20)
    with pytest.raises(CryolabInputError, match="pixel size"):
        check_mask(good, 16, 4.0, 5.0)
    with pytest.raises(CryolabInputError, match="empty"):
        check_mask(np.zeros((16,) * 3), 16)
    with pytest.raises(CryolabInputError, match="whole box"):
        check_mask(np.ones((16,) * 3), 16)
    with pytest.raises(CryolabInputError, match="\\[0, 1\\]"):
        check_mask(2 * good, 16)
    with pytest.raises(CryolabInputError, match="empty"):
        soften(np.zeros((8, 8, 8), bool), 1.0)
    path = write_mask(tmp_path / "m.mrc", good, 4.0)
    np.testing.assert_array_equal(read_mask(path, 16, 4.0), good)
    with pytest.raises(CryolabInputError, match="m.mrc"):
        read_mask(path, 16, 6.0)
