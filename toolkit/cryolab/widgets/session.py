"""Widgets on a live :class:`cryolab.session.Session`: steer a run, look at posteriors, pick classes.

* :class:`SessionDashboard` - Step / Run / Pause / Stop, the tau2 fudge, resolution limit and psi
  step, and panels redrawn after every iteration (curves, class averages, resolution and SSNR);
* :class:`PosteriorExplorer` - one particle's posterior over classes and in-plane angles (3D:
  viewing directions), and the references at its most probable angles (optionally next to a
  second, e.g. maxCC, session);
* :class:`ClassGallery` - class averages with keep/discard toggles; Apply gives ``selected``.

The widgets only read the Session's public attributes and call its public methods. Runs go
through ``Session.run_async`` and the panels are redrawn from ``Session.on_iteration``, so the
kernel stays free while the engine works in a background thread.

The widgets live in :mod:`.dashboard`, :mod:`.posterior` and :mod:`.gallery`, their shared
helpers in ``_session_common``; this module re-exports them.
"""
from __future__ import annotations

from ._session_common import (MODE_NAMES, class_counts, class_image,  # noqa: F401 - re-exported
                              class_resolutions_A, draw_class_grid)
from .dashboard import SessionDashboard
from .gallery import ClassGallery
from .posterior import (EXPLANATION, PosteriorExplorer, top_orientations,  # noqa: F401 - re-exported
                        viewing_directions)

__all__ = ["SessionDashboard", "PosteriorExplorer", "ClassGallery"]
