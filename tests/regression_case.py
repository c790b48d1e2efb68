"""The small fixed jobs of ``test_regression.py``: the same seed and data give the same classes
and maps as the code that wrote ``tests/data/regression_main.npz`` (run this file to rewrite it,
only when a change of results is intended and explained in the commit)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "regression_main.npz"


def run_cases(tmp) -> dict:
    """class2d (K=3, 3 iterations), class3d from two references (2 iterations), then one
    local-search and one skip_align iteration, on 32-px simulated demo particles."""
    from cryolab.data import load_demo
    from cryolab.fourier import fourier_crop
    from cryolab.methods import class2d, class3d
    from cryolab.simulate import simulate_particles, simulate_views_2d

    demo = load_demo()
    n = 32
    pix = demo.pixel_size_A * demo.box_size / n
    vols = {k: fourier_crop(v, n, ndim=3).astype(np.float32) for k, v in demo.volumes.items()}
    out = {}
    sim2 = simulate_views_2d(vols["80S"], 120, pix, n_views=3, snr=0.5, seed=3, out_dir=tmp,
                             name="views")
    s2 = class2d(sim2.star_path, K=3, iterations=3, seed=1, progress=False, batch_size=40)
    out["c2_classes"], out["c2_psi"], out["c2_refs"] = s2.classes, s2.psi, s2.references
    names = ["80S", "60S"]
    sim3 = simulate_particles({k: vols[k] for k in names}, 100, pix, snr=0.2, seed=4,
                              out_dir=tmp, name="parts")
    refs = np.stack([vols[k] for k in names])
    s3 = class3d(sim3.star_path, refs, K=2, iterations=2, seed=2, progress=False, healpix_order=1,
                 ini_high_A=40.0, batch_size=50)
    out["c3_classes"], out["c3_eulers"], out["c3_refs"] = s3.classes, s3.eulers, s3.references
    s3.set(sigma_ang_deg=15.0)
    s3.step()
    out["loc_classes"], out["loc_eulers"], out["loc_refs"] = s3.classes, s3.eulers, s3.references
    s3.set(sigma_ang_deg=None, skip_align=True)
    s3.step()
    out["fix_classes"], out["fix_refs"] = s3.classes, s3.references
    return out


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        res = run_cases(tmp)
    np.savez_compressed(DATA, **res)
    print({k: v.shape for k, v in res.items()})
