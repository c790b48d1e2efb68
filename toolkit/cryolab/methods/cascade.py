"""Cascaded (hierarchical) classification and class stability.

A *cascade* is a tree of classification runs: classify, pick the particles of a class, classify
those again (2D or 3D, globally or focused inside a mask), as Fernandez et al. (2013) did to find
rare states. :class:`Cascade` keeps the tree as one object: every node is a set of particles
(row numbers of the root stack) and, once classified, a RELION-named run in its own subfolder
(``<root>/<node>/run_itNNN_*``) whose classes are the node's children. The whole tree is saved
as plain JSON (``cascade.json``: sizes, settings, resolutions, the cryolab version) and reloaded
with :meth:`Cascade.load`; :meth:`Cascade.labels` gives the leaves as one classification. A 3D
node needs no map of its own: without ``reference`` it starts from the consensus reconstruction of
its particles (the root) or from its class map in the parent's run, and ``starts`` keeps the best
of several seeds by log-likelihood (:meth:`Cascade.classify`).

:func:`class_stability` repeats a classification with other seeds (or on bootstrap resamples)
and gives each particle the fraction of repeats that put it in the same class as the first run
(after matching class numbers one to one): a number for "do my classes change between runs?".
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..backend import to_numpy
from ..errors import CryolabInputError
from ..io import ParticleStack, write_particles
from ..io._files import atomic_path
from ..session.files import json_safe
from ..validation import match_classes
from .class2d import class2d
from .class3d import class3d
from .focused import focused_class3d
from .subtract import SubtractedParticles

__all__ = ["CascadeNode", "Cascade", "class_stability", "adjusted_rand_index"]


@dataclass
class CascadeNode:
    """One node: ``name`` (``"root"``, ``"root/2"``, ``"root/2/1"``: class numbers 1-based),
    ``rows`` (particles, row numbers of the root stack), and after :meth:`Cascade.classify`
    ``run`` (its folder, relative to the cascade's), ``method``, ``K``, ``class_sizes``,
    ``resolution_A`` (per class), ``children`` (names), ``reference`` (where a 3D run's starting
    map came from: ``"given"``, ``"parent class"`` or ``"consensus"``) and ``log_likelihoods`` (the
    final log-likelihood of each start, the kept one first)."""
    name: str
    rows: list
    run: str | None = None
    method: str | None = None
    K: int | None = None
    class_sizes: list = field(default_factory=list)
    resolution_A: list = field(default_factory=list)
    children: list = field(default_factory=list)
    reference: str | None = None
    log_likelihoods: list = field(default_factory=list)


class Cascade:
    """A tree of classifications of ``particles`` (STAR path or stack) written under ``out_dir``."""

    def __init__(self, particles, out_dir):
        self.particles = particles if isinstance(particles, ParticleStack) else ParticleStack.from_star(particles)
        self.out_dir = Path(out_dir)
        self.nodes = {"root": CascadeNode("root", list(range(len(self.particles))))}
        self.sessions: dict = {}

    def node(self, name: str) -> CascadeNode:
        if name not in self.nodes:
            raise CryolabInputError(f"no node {name!r}; the cascade has {sorted(self.nodes)}", field="node")
        return self.nodes[name]

    def particles_of(self, name: str) -> ParticleStack:
        """The particles of a node: with the angles and classes its parent's run gave them while the
        cascade is live; after :meth:`load`, as the root's particles (the runs are on disk)."""
        node = self.node(name)
        parent = name.rsplit("/", 1)[0] if "/" in name else None
        if parent is not None and parent in self.sessions:
            from ..session.files import data_table
            s = self.sessions[parent]
            whole = s.particles.with_table(data_table(s))
            if isinstance(whole, SubtractedParticles):       # a focused run: back to the original images
                whole = whole.original()
            local = np.searchsorted(self.node(parent).rows, node.rows)
            return whole.subset(local)
        return self.particles.subset(np.asarray(node.rows, int))

    def classify(self, name: str, K: int, iterations: int = 15, *, method: str = "class3d", reference=None,
                 mask=None, starts: int = 1, progress: bool = False, **settings) -> CascadeNode:
        """Classify node ``name`` into ``K`` classes with ``method`` (``class2d``, ``class3d``, or
        ``focused`` with ``mask`` and ``reference`` the consensus map) and add its classes as
        children ``name/1 .. name/K``. The run is written to ``<out_dir>/<name>/run_itNNN_*``.

        ``class3d`` without a ``reference`` starts from the data's own map: the node's class map in
        its parent's run (while the cascade is live), else the Wiener reconstruction of the node's
        particles at their poses (a consensus refinement's). That map is on the data's grey scale,
        so the first iteration is not projection matching (``firstiter_cc=False`` unless given);
        :func:`cryolab.methods.class3d.class3d` makes ``K`` seeds from it on random subsets.
        ``starts``: run ``class3d`` with seeds ``seed .. seed + starts - 1`` and keep the run with
        the highest final log-likelihood (RELION users' "run it several times")."""
        node = self.node(name)
        if node.children:
            raise CryolabInputError(f"node {name!r} is already classified", field="node")
        if len(node.rows) < K:
            raise CryolabInputError(f"node {name!r} has {len(node.rows)} particles, fewer than K = {K}", field="K")
        stack = self.particles_of(name)
        origin = "given"
        if method == "class3d" and reference is None:       # checked before anything is written
            reference, origin = self._own_map(name, stack)
            settings.setdefault("firstiter_cc", False)
        folder = self.out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        if method == "class2d":
            session = class2d(stack, K, iterations, progress=progress, **settings)
        elif method == "class3d":
            seed = int(settings.pop("seed", 0))
            runs = [class3d(stack, reference, K, iterations, progress=progress, seed=seed + i, **settings)
                    for i in range(max(1, int(starts)))]
            lls = [float(r.history[-1].loglik) if r.history else float("-inf") for r in runs]
            session = runs[int(np.argmax(lls))]
            node.reference, node.log_likelihoods = origin, sorted(lls, reverse=True)
        elif method == "focused":
            if reference is None or mask is None:
                raise CryolabInputError("focused classification needs the consensus map and a mask", field="mask")
            session = focused_class3d(stack, reference, mask, K, iterations, progress=progress, **settings).session
        else:
            raise CryolabInputError(f"method must be class2d, class3d or focused, got {method!r}", field="method")
        session.save(folder)
        self.sessions[name] = session
        rows = np.asarray(node.rows)
        node.run, node.method, node.K = name, method, K
        node.class_sizes = np.bincount(session.classes, minlength=K).tolist()
        node.resolution_A = [float(r) for r in session.history[-1].resolution_A] if session.history else []
        for k in range(K):
            child = f"{name}/{k + 1}"
            self.nodes[child] = CascadeNode(child, rows[session.classes == k].tolist())
            node.children.append(child)
        self.save()
        return node

    def _own_map(self, name: str, stack: ParticleStack):
        """The starting map of a class3d run without a reference (see :meth:`classify`)."""
        parent, _, k = name.rpartition("/")
        if parent in self.sessions and self.nodes[parent].method == "class3d":
            return np.asarray(to_numpy(self.sessions[parent].references[int(k) - 1])), "parent class"
        if stack.eulers() is None:
            raise CryolabInputError(f"node {name!r}: class3d without a reference needs the particles' poses "
                                    "(a consensus refinement) or a reference map", path=stack.star_path,
                                    field="_rlnAngleRot")
        from ..reconstruction import reconstruct_stack
        return reconstruct_stack(stack, method="wiener"), "consensus"

    def leaves(self) -> list:
        """Names of the nodes not classified further."""
        return [n for n, v in self.nodes.items() if not v.children]

    def labels(self) -> np.ndarray:
        """The leaves as one classification: for each root particle the index of its leaf in
        :meth:`leaves` (a particle is in exactly one leaf)."""
        out = np.full(len(self.particles), -1)
        for i, name in enumerate(self.leaves()):
            out[np.asarray(self.nodes[name].rows, int)] = i
        return out

    def select(self, name: str, path=None) -> ParticleStack:
        """The particles of a branch; written as a STAR file (image paths as RELION reads them)
        when ``path`` is given."""
        stack = self.particles_of(name)
        if path is not None:
            write_particles(path, stack.table.assign(rlnImageName=stack.image_names_for()), stack.optics)
        return stack

    def tree(self) -> dict:
        """The cascade as a JSON-able dict (nodes in creation order)."""
        return {"cryolab_version": __version__, "particles_star": str(Path(self.particles.star_path).resolve()),
                "nodes": [asdict(v) for v in self.nodes.values()]}

    def save(self) -> Path:
        """Write ``<out_dir>/cascade.json`` atomically."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "cascade.json"
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(json_safe(self.tree()), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, out_dir) -> "Cascade":
        """A cascade from its ``cascade.json`` (the runs' Sessions are not reloaded: resume a node's
        run with :meth:`cryolab.session.Session.resume` on its folder)."""
        path = Path(out_dir) / "cascade.json"
        if not path.is_file():
            raise CryolabInputError("no cascade here", path=path)
        doc = json.loads(path.read_text())
        c = cls(doc["particles_star"], out_dir)
        c.nodes = {d["name"]: CascadeNode(**d) for d in doc["nodes"]}
        return c


def adjusted_rand_index(a, b) -> float:
    """The adjusted Rand index of two labelings (1: identical up to names, ~0: chance).

    >>> adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    """
    a, b = np.unique(np.asarray(a), return_inverse=True)[1], np.unique(np.asarray(b), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(x):
        return (x * (x - 1) / 2).sum()
    n = a.size
    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2)
    top = 0.5 * (rows + cols)
    return float(1.0 if top == expected else (index - expected) / (top - expected))


def class_stability(run, n_repeats: int = 5, *, seeds=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-particle assignment stability over repeated classifications.

    ``run(seed) -> labels`` (0-based classes of every particle, e.g.
    ``lambda s: class3d(stack, ref, 2, 10, seed=s, progress=False).classes``); ``seeds``: the
    seeds (default ``0 .. n_repeats-1``). Each repeat's class numbers are matched one to one to
    the first run's (:func:`cryolab.validation.match_classes`). Returns ``(stability [P],
    labels [R, P])``: the fraction of repeats in which each particle lands in its class of the
    first run (1: always; 1/R: never again).
    """
    seeds = list(range(n_repeats)) if seeds is None else list(seeds)
    if len(seeds) < 2:
        raise CryolabInputError("class stability needs at least two repeats", field="n_repeats")
    labels = [np.asarray(run(s), int) for s in seeds]
    first = labels[0]
    matched = [first]
    for lab in labels[1:]:
        mapping = match_classes(lab, first, n_classes=max(lab.max(), first.max()) + 1)
        matched.append(mapping[lab])
    matched = np.stack(matched)
    return (matched == first[None, :]).mean(axis=0), matched
