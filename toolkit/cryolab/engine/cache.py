"""What the orientation samplers share: projecting per class, and a cache of projections."""
from __future__ import annotations

import numpy as np

__all__ = ["CachedProjections"]


class CachedProjections:
    """Base of the samplers: ``project(classes, orients)`` served from a key-sorted cache.

    A sampler provides ``keys(classes, orients) -> int64[J]``, ``_project_class(k, orients)
    -> [n, N, N//2+1]`` (one class's centred half transforms), ``pix`` and ``xp``. The fine
    passes of different images ask for many of the same orientations within an iteration;
    each is projected once (up to ``cache_bytes``).

    Storage never copies what it holds: each call's newly projected rows are kept as they were
    computed, one block per call, and a cached projection is addressed by (block, row in it).
    Growing the cache is appending a block (no bigger buffer, no copy of the rows so far).
    """

    cache_bytes = 1 << 30
    #: orientations projected at a time (their slices and interpolation temporaries, ~50 bytes a
    #: half-transform pixel, are held meanwhile)
    project_chunk = 4096

    def _init_cache(self):
        self._cache_keys = np.zeros(0, np.int64)       # sorted keys
        self._cache_blk = np.zeros(0, np.int64)        # their block in _cache_blocks
        self._cache_row = np.zeros(0, np.int64)        # and row in that block
        self._cache_blocks = []                        # [n_b, M] arrays on xp, as projected

    def _cache_add(self, ukeys, rows, at=None):
        """Keep ``rows`` (a new block) under the sorted distinct keys ``ukeys`` absent so far
        (key ``ukeys[i]`` at row ``at[i]`` of the block; default ``i``)."""
        allk = np.concatenate([self._cache_keys, ukeys])
        allb = np.concatenate([self._cache_blk, np.full(ukeys.size, len(self._cache_blocks), np.int64)])
        at = np.arange(ukeys.size, dtype=np.int64) if at is None else np.asarray(at, np.int64)
        allr = np.concatenate([self._cache_row, at])
        self._cache_blocks.append(rows)
        order = np.argsort(allk, kind="stable")
        self._cache_keys, self._cache_blk, self._cache_row = allk[order], allb[order], allr[order]

    def _cache_gather(self, pos):
        """``[J, w]``: the cached rows (``w`` columns) at sorted positions ``pos`` (one gather per
        block touched)."""
        xp = self.xp
        blk, row = self._cache_blk[pos], self._cache_row[pos]
        used = np.unique(blk)
        if used.size == 1:
            return self._cache_blocks[int(used[0])][xp.asarray(row)]
        out = xp.empty((pos.size, self._cache_blocks[int(used[0])].shape[1]), xp.complex64)
        order = np.argsort(blk, kind="stable")
        bounds = np.searchsorted(blk[order], used)
        for b, sel in zip(used, np.split(order, bounds[1:])):
            out[xp.asarray(sel)] = self._cache_blocks[int(b)][xp.asarray(row[sel])]
        return out

    def project_uncached(self, classes, orients, m: int | None = None, chunk: int | None = None):
        """``[J, M]`` (or ``[J, m]``) projections, computed class by class in chunks of ``chunk``
        (default :attr:`project_chunk`) orientations (not cached)."""
        xp = self.xp
        chunk = int(chunk or self.project_chunk)
        size = self.pix.size if not m else min(int(m), self.pix.size)
        out = None
        for k in np.unique(classes):
            sel = np.flatnonzero(classes == k)
            for start in range(0, sel.size, chunk):
                part = sel[start:start + chunk]
                rows = self._project_class_pixels(int(k), orients[part], size)
                if out is None and part.size == len(classes):
                    out = rows                      # one class, one chunk: no copy
                    continue
                if out is None:
                    out = xp.empty((len(classes), size), dtype=xp.complex64)
                out[xp.asarray(part)] = rows
        return xp.zeros((0, size), dtype=xp.complex64) if out is None else out

    def _project_class_pixels(self, k: int, orients, m: int):
        """``[n, m]``: one class's projections at the first ``m`` likelihood pixels (a sampler
        may compute only those; this default reads them from :meth:`_project_class`)."""
        ft = self._project_class(k, orients)
        return ft.reshape(ft.shape[0], -1)[:, self.pix.index[:m]]

    def project(self, classes, orients, m: int | None = None, width: int | None = None):
        """``[J, M]`` (or ``[J, m]``, uncached) projections for (class, orientation) pairs, in order.
        ``width``: cached, but only the first ``width`` pixels computed, kept and returned (a key
        must always be asked at the same width: e.g. a coarse pass's orientations)."""
        if m:
            return self.project_uncached(classes, orients, m)
        width = self.pix.size if not width else min(int(width), self.pix.size)
        keys = self.keys(classes, orients)
        pos = np.searchsorted(self._cache_keys, keys)
        hit = np.zeros(keys.size, bool)
        if self._cache_keys.size:
            hit = self._cache_keys[np.minimum(pos, self._cache_keys.size - 1)] == keys
        miss = np.flatnonzero(~hit)
        if miss.size:
            ukeys, first = np.unique(keys[miss], return_index=True)
            if (self._cache_keys.size + ukeys.size) * width * 8 > self.cache_bytes:
                self._init_cache()                  # full: start again, and this call's hits are gone too
                miss = np.arange(keys.size)
                ukeys, first = np.unique(keys, return_index=True)
            if ukeys.size == keys.size:     # every row new and distinct (a local search's fine
                # orientations): projected in the order asked and kept as they are, not gathered
                # again (a copy of the rows); read-only, since the cache holds the same array
                rows = self.project_uncached(np.asarray(classes), np.asarray(orients), width)
                self._cache_add(ukeys, rows, at=first)
                if isinstance(rows, np.ndarray):
                    rows.flags.writeable = False
                return rows
            rows = self.project_uncached(np.asarray(classes)[miss[first]], np.asarray(orients)[miss[first]], width)
            self._cache_add(ukeys, rows)
            pos = np.searchsorted(self._cache_keys, keys)
        return self._cache_gather(pos)
