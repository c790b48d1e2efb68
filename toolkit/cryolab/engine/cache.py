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

    def _init_cache(self):
        self._cache_keys = np.zeros(0, np.int64)
        self._cache_rows = self.xp.zeros((0, self.pix.size), self.xp.complex64)

    def _project(self, classes, orients, m: int | None = None, chunk: int = 4096):
        """``[J, M]`` (or ``[J, m]``) projections, computed class by class in chunks (not cached)."""
        xp = self.xp
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
            return self._project(classes, orients, m)
        xp = self.xp
        keys = self.keys(classes, orients)
        pos = np.searchsorted(self._cache_keys, keys)
        hit = np.zeros(keys.size, bool)
        if self._cache_keys.size:
            hit = self._cache_keys[np.minimum(pos, self._cache_keys.size - 1)] == keys
        miss = np.flatnonzero(~hit)
        if miss.size:
            ukeys, first = np.unique(keys[miss], return_index=True)
            rows = self._project(np.asarray(classes)[miss[first]], np.asarray(orients)[miss[first]])
            if (self._cache_keys.size + ukeys.size) * self.pix.size * 8 > self.cache_bytes:
                self._init_cache()
            allk = np.concatenate([self._cache_keys, ukeys])
            order = np.argsort(allk, kind="stable")
            self._cache_keys = allk[order]
            self._cache_rows = xp.concatenate([self._cache_rows, rows])[xp.asarray(order)]
            pos = np.searchsorted(self._cache_keys, keys)
        return self._cache_rows[xp.asarray(pos)]
