"""The fast paths that multi-body refinement's local searches take, against the paths they replace.

1. The M-step buffer (``driver._SliceBuffer.flush``): when every orientation key of the buffered
   batches is distinct (local searches), each batch's sums are inserted as they are instead of
   being concatenated and permuted by key. Reference: the old path (the key-sorted concatenation
   inserted at once, i.e. ``sum_by_key`` then one insertion). Only the order of the additions
   differs; measured when written (float64 accumulators): <= 1.6e-16 of the largest value;
   tolerance 1e-13 (float64 rounding with a wide margin, far below a lost or doubled row, which
   moves the sums by O(1)). With a repeated key the old merge still runs: checked against
   inserting every row on its own (linearity): 2.4e-8 (the merged rows are summed in complex64 /
   float32), tolerance 1e-6.
2. The projector's corner gathers (``_PaddedHalfFT._gather``: ``np.take``) against fancy indexing,
   the gather they replace: equal to the bit, with and without leading axes (2D stacks).
"""
from __future__ import annotations

import numpy as np

from cryolab.engine.driver import _SliceBuffer
from cryolab.engine.estep import fourier_pixels
from cryolab.engine.keysum import sum_by_key
from cryolab.engine.spherical import SphericalSampler
from cryolab.geometry import euler_to_matrix
from cryolab.projection import FourierProjector, FourierRotator2D
from cryolab.reconstruction import BackProjector

RTOL = 1e-13
RTOL_MERGED = 1e-6
N = 16


class _Keys:
    keys = staticmethod(SphericalSampler.keys)


def _parts(counts, seed, repeat=False):
    """Batches of (orientation rows [J, 5], D [J, M] complex64, W [J, M] float32); distinct keys
    (HEALPix pixel = a running number) unless ``repeat`` (the last batch repeats a row of the first)."""
    rng = np.random.default_rng(seed)
    pix = fourier_pixels(N, N // 2 - 1)
    out, start = [], 0
    for c in counts:
        o = np.zeros((c, 5))
        o[:, 0], o[:, 1], o[:, 2] = rng.uniform(-180, 180, c), rng.uniform(0, 180, c), rng.uniform(0, 360, c)
        o[:, 3], o[:, 4] = np.arange(start, start + c), 4
        start += c
        d = (rng.normal(size=(c, pix.size)) + 1j * rng.normal(size=(c, pix.size))).astype(np.complex64)
        out.append([o, d, rng.uniform(0.1, 2.0, (c, pix.size)).astype(np.float32)])
    if repeat:
        out[-1][0][0] = out[0][0][3]
    return pix, [tuple(p) for p in out]


def _insert(bp, pix, orients, D, W):
    bp.insert_pixels(D, W, euler_to_matrix(orients[:, 0], orients[:, 1], orients[:, 2]), pix.kx, pix.ky)


def _through_buffer(pix, parts):
    bp = BackProjector(N)
    buf = _SliceBuffer(_Keys(), lambda k, o, d, w: _insert(bp, pix, o, d, w), max_entries=1 << 30)
    for o, d, w in parts:
        buf.add(0, o, d, w)
    buf.flush()
    return bp


def _close(got, want, rtol=RTOL):
    for g, w in ((got.data, want.data), (got.weight, want.weight)):
        assert float(np.abs(g - w).max()) <= rtol * float(np.abs(w).max())


def test_distinct_keys_inserted_batch_by_batch_equal_the_sorted_merge():
    pix, parts = _parts((7, 5, 9), seed=3)
    got = _through_buffer(pix, parts)
    orients = np.concatenate([p[0] for p in parts])
    first, D, W = sum_by_key(SphericalSampler.keys(np.zeros(len(orients), int), orients),
                             np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))
    assert len(first) == len(orients)                       # every key distinct: the fast path
    want = BackProjector(N)
    _insert(want, pix, orients[first], D, W)                # the old path: sorted by key, one insertion
    _close(got, want)


def test_a_repeated_key_is_still_merged():
    pix, parts = _parts((4, 6), seed=5, repeat=True)
    inserted = []
    bp = BackProjector(N)

    def insert(k, o, d, w):
        inserted.append(len(o))
        _insert(bp, pix, o, d, w)
    buf = _SliceBuffer(_Keys(), insert, max_entries=1 << 30)
    for o, d, w in parts:
        buf.add(0, o, d, w)
    buf.flush()
    assert inserted == [9]                                  # 10 rows, one key twice: merged
    want = BackProjector(N)
    for o, d, w in parts:                                   # every row on its own (linearity)
        for j in range(len(o)):
            _insert(want, pix, o[j:j + 1], d[j:j + 1], w[j:j + 1])
    _close(bp, want, RTOL_MERGED)


def test_take_gather_equals_fancy_indexing():
    rng = np.random.default_rng(7)
    proj = FourierProjector(rng.normal(size=(N, N, N)).astype(np.float32), max_shell=N // 2 - 1)
    rot2d = FourierRotator2D(rng.normal(size=(3, N, N)).astype(np.float32))
    for ft in (proj.ft, rot2d.ft):
        size = ft.data.shape[-1]
        base = rng.integers(0, size - max(ft.strides) - 2, 500).astype(np.int32)
        for shift in (0, 1, ft.strides[0] + 1):
            got = ft._gather(shift, base)
            want = ft.data[..., shift:][..., base]
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_all_new_distinct_rows_are_returned_unpermuted_and_cached():
    """A call whose orientations are all new and distinct (local searches' fine passes) returns the
    projections in the order asked without gathering them again, read-only (the cache holds the
    same array), and later calls find them: the same values as fresh projections, to the bit."""
    rng = np.random.default_rng(11)
    pix = fourier_pixels(N, N // 2 - 1)
    sampler = SphericalSampler(rng.normal(size=(2, N, N, N)).astype(np.float32), pix, 1, 1.0, 1.0)
    orients = sampler.orientations[rng.permutation(len(sampler.orientations))[:40]]
    classes = rng.integers(0, 2, 40)
    got = sampler.project(classes, orients)
    assert np.array_equal(got, sampler.project_uncached(classes, orients)) and not got.flags.writeable
    again = rng.permutation(40)[:25]
    later = sampler.project(classes[again], orients[again])       # all hits: gathered from the block
    assert np.array_equal(later, got[again])


def test_local_candidate_rows_equal_the_full_grid_in_any_row_order():
    """The direction-first candidate rows (each near direction's rows from the grid's row lists,
    then the prior's cut-off) equal the rows the full-grid prior leaves finite, ascending, also for
    a grid whose rows are not grouped by direction."""
    from cryolab.engine.spherical import grid_directions, healpix_orientations, local_candidate_rows, local_log_prior
    rng = np.random.default_rng(2)
    grid = healpix_orientations(3)
    for rows_order in (np.arange(len(grid)), rng.permutation(len(grid))):
        g = grid[rows_order]
        priors = np.c_[rng.uniform(-180, 180, 5), np.degrees(np.arccos(rng.uniform(-1, 1, 5))),
                       rng.uniform(-180, 180, 5)]
        want = np.flatnonzero(np.isfinite(local_log_prior(priors, g, 10.0)).any(axis=0))
        got = local_candidate_rows(priors, g, 10.0, directions=grid_directions(g))
        assert want.size > 0 and np.array_equal(got, want)


def test_insertion_helpers_equal_their_formulas():
    """``_centred_index`` equals ``(i + M//2) % M`` (inside the fast path's range and beyond it) and
    ``_conj_where`` equals ``where(neg, conj(v), v)``, to the bit (signed zeros too)."""
    from cryolab.reconstruction.interpolation import _centred_index, _conj_where
    rng = np.random.default_rng(4)
    m = 16
    for lo, hi in ((-m // 2 - 1, m // 2 + 1), (-3 * m, 3 * m)):
        i = rng.integers(lo, hi, 1000).astype(np.int32)
        assert np.array_equal(_centred_index(i.copy(), m), (i + m // 2) % m)
    v = (rng.normal(size=1000) + 1j * rng.normal(size=1000)).astype(np.complex64)
    v[:10] = 0
    neg = rng.random(1000) < 0.5
    got, want = _conj_where(v, neg, np.where(neg, -1.0, 1.0)), np.where(neg, v.conj(), v)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert np.array_equal(np.signbit(got.imag), np.signbit(want.imag))


def test_coarse_ramps_made_once_equal_fresh_ones():
    """The sampler's coarse phase ramps, made once and shared by every batch's coarse set, equal
    ``shift_ramps`` of its translations (to the bit), for all pixels and for a coarse prefix."""
    from cryolab.projection import shift_ramps
    rng = np.random.default_rng(12)
    pix = fourier_pixels(N, N // 2 - 1)
    sampler = SphericalSampler(rng.normal(size=(1, N, N, N)).astype(np.float32), pix, 1, 2.0, 1.0)
    want = shift_ramps(pix.n, sampler.trans, np, kx=pix.kx, ky=pix.ky)
    some = sampler.orientations[:30]
    first, second = sampler.coarse(orientations=some), sampler.coarse(20, orientations=some)
    assert np.array_equal(first.ramps, want) and np.array_equal(second.ramps, want[:, :20])
    assert not first.ramps.flags.writeable


def test_coarse_rows_cached_at_the_coarse_width_equal_full_projections():
    """Local searches' coarse sets are projected, cached and gathered at the coarse pass's width
    only: equal to the full projections' first pixels (to the bit), also when a later batch's set
    mixes cached and new orientations."""
    rng = np.random.default_rng(13)
    pix = fourier_pixels(N, N // 2 - 1)
    sampler = SphericalSampler(rng.normal(size=(2, N, N, N)).astype(np.float32), pix, 1, 1.0, 1.0)
    m = pix.count_within(4)
    grid = sampler.orientations
    for rows in (np.arange(0, 60), np.arange(40, 100), np.arange(0, 100, 3)):
        got = sampler.coarse(m, orientations=grid[rows])
        full = sampler.project_uncached(got.classes, got.orients)
        assert got.P.shape == (2 * len(rows), m) and np.array_equal(got.P, full[:, :m])


def test_body_images_ctf_read_once_equals_the_stacks(tmp_path):
    """A body's CTF parameters, read from the table once and indexed per batch, equal the stack's
    own per-batch reading (every field, any rows)."""
    from dataclasses import fields

    from cryolab.fourier import fourier_crop
    from cryolab.io import ParticleStack
    from cryolab.methods.multibody import ratchet_bodies
    from cryolab.methods.multibody.images import BodyParticles
    from cryolab.simulate import simulate_hinge
    vols, pivot, axis = ratchet_bodies()
    vols = {k: fourier_crop(v, N, ndim=3).astype(np.float32) for k, v in vols.items()}
    sim = simulate_hinge(vols, 6, 6.0 * 64 / N, pivot_A=pivot, axis=axis, seed=1, snr=1.0, out_dir=tmp_path,
                         name="p", include_truth_angles=True)
    stack = ParticleStack.from_star(sim.star_path)
    body = BodyParticles(stack, np.zeros(3))
    for rows in (None, [4, 1], np.arange(6)[::2], 3):
        got, want = body.ctf(rows), stack.ctf(rows)
        for f in fields(want):
            assert np.array_equal(np.asarray(getattr(got, f.name)), np.asarray(getattr(want, f.name))), f.name
    assert len(set(np.round(stack.ctf().defocus_u_A))) > 1           # the rows differ: the indexing is checked
