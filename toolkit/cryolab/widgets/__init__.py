"""Jupyter widgets for teaching and inspecting cryo-EM processing.

* :class:`ProjectionSliceExplorer` - projection vs central slice (projection-slice theorem);
* :class:`CTFExplorer` - the CTF, its effect on an image, phase flipping, several defoci;
* :class:`MapViewer` - isosurface (nglview) or orthogonal slices of a map;
* :class:`FSCViewer` - FSC curves with the 0.143 / 0.5 thresholds and resolutions;
* :class:`MaskEditor` - place and size a soft mask on a map, preview the masked map;
* :class:`CascadeTree` - browse a cascade of classifications and select a branch;
* :class:`PickingViewer` - a micrograph with its picks, the figure-of-merit map and a live threshold;
  :func:`tilt_pair_plot` - the polar plot of tilt-pair validation;
* :class:`HingeExplorer` - slide along a motion of a multi-body refinement, the map moving;
* :class:`LatentExplorer`, :class:`ComponentSlider` - select particles in a latent space, slide
  along a variability component with its map and free-energy profile;
* :class:`InitialModelViewer` - step an ab-initio initial model and watch the maps emerge;
* :class:`SessionDashboard`, :class:`PosteriorExplorer`, :class:`ClassGallery` - steer a live
  classification :class:`cryolab.session.Session`, read posteriors, keep/discard classes;
* :func:`example_map` / :func:`phantom_volume` - maps for the course notebooks.

Widgets only read arrays and call public cryolab functions; they render figures as PNG in an
``ipywidgets.Image``, so they display with any matplotlib backend and in a headless browser.
"""
from .cascade import CascadeTree
from .dashboard import SessionDashboard
from .demo import example_map, phantom_volume
from .gallery import ClassGallery
from .hinge import HingeExplorer
from .initial_model import InitialModelViewer
from .latent import ComponentSlider, LatentExplorer
from .masks import MaskEditor
from .picking import PickingViewer, tilt_pair_plot
from .posterior import PosteriorExplorer
from .teaching import CTFExplorer, ProjectionSliceExplorer
from .viewers import FSCViewer, MapViewer

__all__ = ["ProjectionSliceExplorer", "CTFExplorer", "MapViewer", "FSCViewer", "MaskEditor", "CascadeTree",
           "HingeExplorer", "SessionDashboard", "PosteriorExplorer", "ClassGallery", "example_map", "phantom_volume"]
__all__ += ["PickingViewer", "tilt_pair_plot", "InitialModelViewer", "LatentExplorer", "ComponentSlider"]
