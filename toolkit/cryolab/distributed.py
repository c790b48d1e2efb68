"""The E-step on a dask cluster: chunks of particles shipped to workers, sums reduced in order.

The E-step itself is :func:`cryolab.engine.driver.estep_chunk` (plain inputs, plain outputs);
this module only sends it to `dask.distributed <https://distributed.dask.org>`_ workers.
With ``Settings.scheduler``:

* ``"local:N"``: a ``LocalCluster`` of ``N`` worker processes (one thread each) on this machine;
* ``"tcp://host:8786"``: an existing cluster's scheduler (e.g. started by dask-jobqueue's
  ``SLURMCluster`` or dask-kubernetes); its workers must see the particle files at the same path.

Workers read the images themselves (memory maps of the stack files named in the STAR file):
only metadata rows (:class:`StackRows`), references and the resulting sums travel over the network.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engine.driver import EStepInputs, estep_chunk
from .settings import check_scheduler

__all__ = ["StackRows", "estep_on_cluster", "get_client", "close_clients", "chunk_rows"]


@dataclass
class StackRows:
    """Rows of a particle table, to be opened where the work runs (no images: they are read there).

    Image names are relative to the (absolute) STAR file's folder, as
    :meth:`~cryolab.io.ParticleStack.image_names_for` writes them.
    """
    star_path: str
    table: object
    optics: object

    @classmethod
    def of(cls, stack, rows, names=None) -> "StackRows":
        """The rows ``rows`` of ``stack`` (``names``: its image names for its folder, if known)."""
        star = Path(stack.star_path).resolve()
        if names is None:
            names = np.asarray(stack.image_names_for(star.parent), dtype=object)
        table = stack.table.iloc[rows].copy()
        table["rlnImageName"] = names[rows]
        return cls(str(star), table, stack.optics)

    def open(self):
        from .io import ParticleStack
        return ParticleStack(self.table, self.optics, self.star_path)


# --------------------------------------------------------------------------- clusters

_CLIENTS: dict = {}


def get_client(scheduler: str):
    """A dask.distributed Client for ``"local:N"`` (a LocalCluster started once per process) or
    a scheduler address; clients are kept for the next iteration."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("a scheduler needs dask.distributed: pip install 'cryolab[dask]'") from None
    check_scheduler(scheduler)
    client = _CLIENTS.get(scheduler)
    if client is not None and client.status == "running":
        return client
    if scheduler.startswith("local:"):
        cluster = LocalCluster(n_workers=int(scheduler[len("local:"):]), threads_per_worker=1,
                               processes=True, dashboard_address=":0")
        client = Client(cluster)
    else:
        client = Client(scheduler)
    _CLIENTS[scheduler] = client
    return client


def close_clients() -> None:
    """Close the clients (and local clusters) started by :func:`get_client`."""
    while _CLIENTS:
        _, client = _CLIENTS.popitem()
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()


def chunk_rows(n: int, batch_size: int, n_chunks: int) -> list:
    """``n`` rows cut into at most ``n_chunks`` consecutive chunks of whole batches."""
    batches = math.ceil(n / batch_size)
    per = math.ceil(batches / max(1, min(n_chunks, batches))) * batch_size
    return [np.arange(i, min(n, i + per)) for i in range(0, n, per)]


def estep_on_cluster(scheduler: str, inputs: EStepInputs, stack, offsets_px, eulers, on_chunk,
                     stop=None, progress=None):
    """Run the E-step of all particles of ``stack`` on a cluster; returns the reduced EStepSums
    (None when ``stop`` (a threading.Event) was set).

    The particles are cut into about four chunks per worker; each runs :func:`estep_chunk` on a
    worker, which reads its own images. ``on_chunk(rows, ChunkResult)`` is called in order of
    the rows, and the sums are added in that order (the result does not depend on which worker
    finished first). ``progress``: a tqdm-like bar advanced per chunk.
    """
    client = get_client(scheduler)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    chunks = chunk_rows(len(stack), inputs.settings.batch_size, 4 * n_workers)
    names = np.asarray(stack.image_names_for(Path(stack.star_path).resolve().parent), dtype=object)
    shared = client.scatter(inputs, broadcast=True, hash=False)
    futures = [client.submit(estep_chunk, shared, StackRows.of(stack, rows, names), None,
                             offsets_px[rows], eulers[rows], pure=False) for rows in chunks]
    if progress is not None:
        progress.reset(total=len(chunks))
    total = None
    try:
        for rows, fut in zip(chunks, futures):
            while not fut.done():
                if stop is not None and stop.is_set():
                    return None
                time.sleep(0.02)
            part, sums = fut.result()
            fut.release()
            on_chunk(rows, part)
            total = sums if total is None else total.add(sums)
            if progress is not None:
                progress.update(1)
    finally:
        client.cancel([f for f in futures if not f.done()])
    return total
