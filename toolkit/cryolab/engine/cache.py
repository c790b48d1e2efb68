"""A cache of full-resolution reference projections, keyed by the samplers' orientation keys."""
from __future__ import annotations

import numpy as np

__all__ = ["CachedProjections"]


class CachedProjections:
    """Mixin for samplers: ``project(classes, orients)`` served from a key-sorted cache.

    A sampler provides ``keys(classes, orients) -> int64[J]``, ``_project(classes, orients, m)``,
    ``pix`` and ``xp``. The fine passes of different images ask for many of the same
    orientations within an iteration; each is projected once (up to ``cache_bytes``).
    """

    cache_bytes = 1 << 30

    def _init_cache(self):
        self._cache_keys = np.zeros(0, np.int64)
        self._cache_rows = self.xp.zeros((0, self.pix.size), self.xp.complex64)

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
