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
    """

    cache_bytes = 1 << 30
    #: orientations projected at a time (their slices and interpolation temporaries, ~50 bytes a
    #: half-transform pixel, are held meanwhile)
    project_chunk = 4096

    def _init_cache(self):
        self._cache_keys = np.zeros(0, np.int64)       # sorted keys
        self._cache_pos = np.zeros(0, np.int64)        # their rows in the buffer
        self._cache_rows = self.xp.zeros((0, self.pix.size), self.xp.complex64)
        self._cache_used = 0

    def _cache_append(self, rows) -> np.ndarray:
        """Store ``rows`` in the buffer (capacity doubled when full, up to ``cache_bytes``); returns
        their positions."""
        xp, n = self.xp, rows.shape[0]
        need = self._cache_used + n
        if need > self._cache_rows.shape[0]:
            most = max(need, self.cache_bytes // (8 * max(self.pix.size, 1)))
            grown = xp.zeros((min(max(need, 2 * self._cache_rows.shape[0]), most), self.pix.size), xp.complex64)
            grown[:self._cache_used] = self._cache_rows[:self._cache_used]
            self._cache_rows = grown
        self._cache_rows[self._cache_used:need] = rows
        pos = np.arange(self._cache_used, need)
        self._cache_used = need
        return pos

    def project_uncached(self, classes, orients, m: int | None = None, chunk: int | None = None):
        """``[J, M]`` (or ``[J, m]``) projections, computed class by class in chunks of ``chunk``
        (default :attr:`project_chunk`) orientations (not cached)."""
        xp = self.xp
        chunk = int(chunk or self.project_chunk)
        idx = self.pix.index[:m] if m else self.pix.index
        out = xp.zeros((len(classes), idx.shape[0]), dtype=xp.complex64)
        for k in np.unique(classes):
            sel = np.flatnonzero(classes == k)
            for start in range(0, sel.size, chunk):
                part = sel[start:start + chunk]
                ft = self._project_class(int(k), orients[part])
                out[xp.asarray(part)] = ft.reshape(len(part), -1)[:, idx]
        return out

    def project(self, classes, orients, m: int | None = None):
        """``[J, M]`` (or ``[J, m]``, uncached) projections for (class, orientation) pairs, in order."""
        if m:
            return self.project_uncached(classes, orients, m)
        xp = self.xp
        keys = self.keys(classes, orients)
        pos = np.searchsorted(self._cache_keys, keys)
        hit = np.zeros(keys.size, bool)
        if self._cache_keys.size:
            hit = self._cache_keys[np.minimum(pos, self._cache_keys.size - 1)] == keys
        miss = np.flatnonzero(~hit)
        if miss.size:
            ukeys, first = np.unique(keys[miss], return_index=True)
            if (self._cache_keys.size + ukeys.size) * self.pix.size * 8 > self.cache_bytes:
                self._init_cache()                  # full: start again, and this call's hits are gone too
                miss = np.arange(keys.size)
                ukeys, first = np.unique(keys, return_index=True)
            rows = self.project_uncached(np.asarray(classes)[miss[first]], np.asarray(orients)[miss[first]])
            allk = np.concatenate([self._cache_keys, ukeys])
            allp = np.concatenate([self._cache_pos, self._cache_append(rows)])
            order = np.argsort(allk, kind="stable")
            self._cache_keys, self._cache_pos = allk[order], allp[order]
            pos = np.searchsorted(self._cache_keys, keys)
        return self._cache_rows[xp.asarray(self._cache_pos[pos])]
