"""Build the demo maps shipped in ``cryolab/data`` from atomic models (not imported at run time).

Usage (needs ``gemmi``; the models are the PDB entries 6ZU5 and 1TII)::

    python -m cryolab.data.build_demo 6zu5.cif.gz 1tii.pdb.gz

Recipe, for each *component* (a set of chains):

1. read the model, drop hydrogens and waters, move the centre of mass of the
   **whole** complex to the box centre (voxel ``N // 2``, i.e. ``N//2 * pixel`` A),
   so every component and state shares one frame;
2. electron-scattering density with ``gemmi.DensityCalculatorE`` on a grid twice
   as fine as the final one, with an extra Gaussian blur ``BLUR_A2`` (no aliasing);
3. Fourier-crop to the final box (:func:`cryolab.fourier.fourier_crop`) and
   low-pass at ``LOWPASS_PX`` pixels with a soft edge (:func:`cryolab.fourier.lowpass`);
4. scale all components of a dataset by one factor so that the full complex has
   maximum 1, store as float16 (values below ``ZERO_BELOW`` set to 0) in a
   compressed ``.npz``. States are sums of components (density is linear in atoms).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cryolab.fourier import fourier_crop, lowpass

OVERSAMPLE = 2
BLUR_A2 = 1000.0      # extra B-factor: smooth ~15 A maps without ringing
LOWPASS_PX = 2.4      # final low-pass, in pixels (resolution = LOWPASS_PX * pixel size)
EDGE_SHELLS = 4.0
ZERO_BELOW = 1e-3     # relative to the maximum of the full complex

# name -> (model file, box, pixel size, description, source, components, states)
DATASETS = {
    "ribosome": dict(
        model="6zu5.cif.gz", box=64, pixel_size_A=6.0,
        description=("80S ribosome of the microsporidian Paranosema locustae with the dormancy "
                     "factor Lso2, and states lacking parts of it, in one frame. Pairs for 3D "
                     "classification: '80S' vs '60S' (easy, the whole small subunit), '80S' vs "
                     "'80S_noRACK1' (RACK1, ~1.3% of the mass, on the small subunit's head), "
                     "'80S' vs '80S_noLso2' (Lso2, ~0.4%, hard)."),
        source=("Computed from PDB 6ZU5 (EMD-11437; Ehrenbolger et al., PLoS Biol 2020), "
                "CC0, with gemmi; see docs/DATA.md"),
        components={"60S_core": "L* but LNN", "40S_core": "S* but SGG", "RACK1": "SGG", "Lso2": "LNN"},
        states={"80S": ["60S_core", "40S_core", "RACK1", "Lso2"],
                "80S_noRACK1": ["60S_core", "40S_core", "Lso2"],
                "80S_noLso2": ["60S_core", "40S_core", "RACK1"],
                "60S": ["60S_core"]},
    ),
    "toxin": dict(
        model="1tii.pdb.gz", box=32, pixel_size_A=4.0,
        description=("E. coli heat-labile enterotoxin IIb (AB5): 'AB5' the whole toxin, 'B5' the "
                     "pentameric B ring without the A subunit. Small and quick, for tests."),
        source="Computed from PDB 1TII (X-ray), CC0, with gemmi; see docs/DATA.md",
        components={"B5": "D E F G H", "A": "A C"},
        states={"AB5": ["B5", "A"], "B5": ["B5"]},
    ),
}


def chain_selector(rule: str):
    """Chain-name test for a rule: ``'L* but LNN'`` (prefix, exceptions) or ``'A C'`` (names)."""
    if "*" in rule:
        prefix, _, rest = rule.partition("*")
        excluded = set(rest.replace("but", " ").split())
        return lambda name: name.startswith(prefix) and name not in excluded
    names = set(rule.split())
    return lambda name: name in names


def read_centred(model_path, box: int, pixel_size_A: float):
    """The model (gemmi Structure) with its centre of mass at the box centre, in a P1 cubic cell."""
    import gemmi
    st = gemmi.read_structure(str(model_path))
    st.remove_hydrogens()
    st.remove_waters()
    st.remove_empty_chains()
    model = st[0]
    com = model.calculate_center_of_mass()
    centre_A = (box // 2) * pixel_size_A
    model.transform_pos_and_adp(gemmi.Transform(
        gemmi.Mat33(), gemmi.Vec3(centre_A - com.x, centre_A - com.y, centre_A - com.z)))
    length_A = box * pixel_size_A
    st.cell = gemmi.UnitCell(length_A, length_A, length_A, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    return st


def component_density(st, rule: str, box: int, pixel_size_A: float) -> np.ndarray:
    """Density ``[z, y, x]`` (float64) of the chains of ``st`` selected by ``rule`` (steps 2-3)."""
    import gemmi
    keep = chain_selector(rule)
    model = st[0].clone()
    for name in {ch.name for ch in model}:
        if not keep(name):
            model.remove_chain(name)
    fine = box * OVERSAMPLE
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 2 * pixel_size_A / OVERSAMPLE
    calc.blur = BLUR_A2
    calc.grid.set_unit_cell(st.cell)
    calc.grid.spacegroup = gemmi.SpaceGroup("P 1")
    calc.grid.set_size(fine, fine, fine)
    calc.add_model_density_to_grid(model)
    dens = np.array(calc.grid, copy=True).astype(np.float64).transpose(2, 1, 0)  # gemmi [x,y,z]
    dens = fourier_crop(dens, box, ndim=3)
    return lowpass(dens, LOWPASS_PX * pixel_size_A, pixel_size_A, ndim=3, edge_shells=EDGE_SHELLS)


def build_dataset(name: str, model_path) -> tuple[dict[str, np.ndarray], dict]:
    """Components (scaled float64 maps) and metadata of dataset ``name`` from its model file."""
    spec = DATASETS[name]
    st = read_centred(model_path, spec["box"], spec["pixel_size_A"])
    comps = {c: component_density(st, rule, spec["box"], spec["pixel_size_A"])
             for c, rule in spec["components"].items()}
    scale = 1.0 / sum(comps.values()).max()
    comps = {c: v * scale for c, v in comps.items()}
    meta = {k: spec[k] for k in ("box", "pixel_size_A", "description", "source", "components", "states")}
    meta.update(file=f"{name}.npz", recipe=dict(oversample=OVERSAMPLE, blur_A2=BLUR_A2, lowpass_px=LOWPASS_PX,
                                                edge_shells=EDGE_SHELLS, zero_below=ZERO_BELOW,
                                                model=spec["model"]))
    return comps, meta


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    out = Path(__file__).resolve().parent
    models = {Path(p).name.lower(): p for p in argv}
    index = {}
    for name, spec in DATASETS.items():
        if spec["model"] not in models:
            print(f"skipping {name}: {spec['model']} not given")
            continue
        comps, meta = build_dataset(name, models[spec["model"]])
        stored = {c: np.where(np.abs(v) < ZERO_BELOW, 0.0, v).astype(np.float16) for c, v in comps.items()}
        np.savez_compressed(out / meta["file"], **stored)
        index[name] = meta
        print(f"{name}: {out / meta['file']} ({(out / meta['file']).stat().st_size / 1024:.0f} KB)")
    old = json.loads((out / "demo.json").read_text()) if (out / "demo.json").exists() else {}
    old.update(index)
    (out / "demo.json").write_text(json.dumps(old, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
