"""What a radio astronomer checks after the real pipeline (example_recipes/science/), and the
products compared with Stimela's run. Run with the ``cal`` tool venv's Python (python-casacore,
dask-ms, astropy): ``python science_checks.py science WORKDIR`` or
``python science_checks.py products WORKDIR`` prints one JSON object. No pytest here: the test
(tests/test_science.py) judges the numbers.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys

import numpy as np

PREFIX = "kat7"
MS = "kat7.ms"
#: the true sky of sky.txt: (name, RA deg, Dec deg, Jy)
SKY = [("src0", 0.0, -30.0, 10.0), ("src1", 80.0 / 3600 * 15, -29 - 40 / 60, 4.0),
       ("src2", (23 + 58.5 / 60) * 15 - 360, -30 - 25 / 60, 2.5)]


def _col(ms: str, name: str, table_name: str = "") -> np.ndarray:
    from casacore.tables import table

    with table(f"{ms}::{table_name}" if table_name else ms, ack=False) as t:
        return t.getcol(name)


def _sep_arcsec(ra1, dec1, ra2, dec2) -> float:
    ra1, dec1, ra2, dec2 = map(np.deg2rad, (ra1, dec1, ra2, dec2))
    c = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return float(np.rad2deg(np.arccos(np.clip(c, -1, 1))) * 3600)


def flags(work: str) -> dict:
    with open(os.path.join(work, f"{PREFIX}-truth.json")) as f:
        truth = json.load(f)
    ms = os.path.join(work, MS)
    flag, times = _col(ms, "FLAG"), _col(ms, "TIME")
    rfi = np.zeros(flag.shape, dtype=bool)
    rfi[:, truth["rfi_channel"], :] = True
    rfi[np.isin(times, truth["rfi_times"])] = True
    return {"rfi_flagged": float(flag[rfi].mean()), "clean_flagged": float(flag[~rfi].mean()),
            "rfi_fraction": float(rfi.mean())}


def gains(work: str) -> dict:
    """Baseline gain products g_p g_q^* (free of the phase gauge) solved vs injected."""
    from daskms.experimental.zarr import xds_from_zarr

    with open(os.path.join(work, f"{PREFIX}-truth.json")) as f:
        truth = json.load(f)
    injected = np.array(truth["gains_re"]) + 1j * np.array(truth["gains_im"])
    (xds,) = xds_from_zarr(os.path.join(work, f"{PREFIX}-gains.qc::G"))
    solved = xds.gains.values[0, 0, :, 0, :]  # (time, freq, antenna, direction, correlation)
    corr = [0, -1] if solved.shape[-1] > injected.shape[-1] else list(range(injected.shape[-1]))
    solved = solved[:, corr]
    nant = injected.shape[0]
    p, q = np.triu_indices(nant, 1)
    want = injected[p] * np.conj(injected[q])
    got = solved[p] * np.conj(solved[q])
    return {"max_amp_error": float(np.max(np.abs(np.abs(got) / np.abs(want) - 1))),
            "max_phase_error_deg": float(np.max(np.abs(np.rad2deg(np.angle(got / want))))),
            "nant": int(nant)}


def image(work: str) -> dict:
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(os.path.join(work, f"{PREFIX}-image.fits")) as hdul:
        data, header = hdul[0].data, hdul[0].header
    plane = np.squeeze(data)
    y, x = np.unravel_index(np.nanargmax(plane), plane.shape)
    wcs = WCS(header).celestial
    ra, dec = wcs.pixel_to_world_values(x, y)
    name, ra0, dec0, flux = SKY[0]
    return {"peak": float(plane[y, x]), "peak_offset_arcsec": _sep_arcsec(ra, dec, ra0, dec0),
            "cell_arcsec": abs(float(header["CDELT1"])) * 3600, "true_peak": flux,
            "nan_pixels": int(np.isnan(plane).sum()), "shape": list(plane.shape)}


def catalogue(work: str) -> dict:
    from astropy.io import fits

    with fits.open(os.path.join(work, f"{PREFIX}-srl.fits")) as hdul:
        rows = hdul[1].data
        ra, dec, total = rows["RA"], rows["DEC"], rows["Total_flux"]
    matches = {}
    for name, ra0, dec0, flux in SKY:
        seps = [_sep_arcsec(r, d, ra0 % 360, dec0) for r, d in zip(ra, dec)]
        i = int(np.argmin(seps))
        matches[name] = {"offset_arcsec": seps[i], "flux": float(total[i]), "true_flux": flux}
    return {"nsources": int(len(ra)), "matches": matches}


def science(work: str) -> dict:
    return {"flags": flags(work), "gains": gains(work), "image": image(work), "catalogue": catalogue(work)}


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def products(work: str) -> dict:
    """What each step made, to compare two runs: per MS column (by the step that writes it) a
    digest of its values, per file a digest of its bytes, FITS pixel digests, gains, catalogue rows."""
    from astropy.io import fits
    from daskms.experimental.zarr import xds_from_zarr

    ms = os.path.join(work, MS)
    out: dict = {"columns": {}, "files": {}, "fits": {}, "stats": {}}
    for step, column in (("simulate", "UVW"), ("simulate", "TIME"), ("simulate", "ANTENNA1"),
                         ("predict", "MODEL_DATA"), ("corrupt", "DATA"), ("flag", "FLAG"),
                         ("calibrate", "CORRECTED_DATA")):
        values = _col(ms, column)
        out["columns"][f"{step}:{column}"] = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
        if np.iscomplexobj(values):
            out["stats"][f"{step}:{column}"] = [float(np.nanmean(np.abs(values))), float(np.nanstd(values))]
    out["columns"]["simulate:ANTENNA.POSITION"] = hashlib.sha256(_col(ms, "POSITION", "ANTENNA").tobytes()).hexdigest()
    out["files"]["corrupt:truth"] = _digest(os.path.join(work, f"{PREFIX}-truth.json"))
    for step, name in (("image", "image"), ("image", "residual"), ("mask", "mask")):
        with fits.open(os.path.join(work, f"{PREFIX}-{name}.fits")) as hdul:
            data = np.ascontiguousarray(hdul[0].data)
        out["fits"][f"{step}:{name}"] = hashlib.sha256(data.tobytes()).hexdigest()
        out["stats"][f"{step}:{name}"] = [float(np.nanmax(data)), float(np.nanstd(data))]
    (xds,) = xds_from_zarr(os.path.join(work, f"{PREFIX}-gains.qc::G"))
    out["stats"]["calibrate:gains"] = np.abs(xds.gains.values).ravel().tolist()
    with fits.open(os.path.join(work, f"{PREFIX}-srl.fits")) as hdul:
        rows = hdul[1].data
        sources = sorted((float(r), float(d), float(s)) for r, d, s in zip(rows["RA"], rows["DEC"], rows["Total_flux"]))
        out["stats"]["catalogue:rows"] = [value for source in sources for value in source]
    out["files"]["stats:fidelity"] = sorted(os.path.basename(p) for p in glob.glob(os.path.join(work, f"{PREFIX}-fidelity*")))
    return out


if __name__ == "__main__":
    what, work = sys.argv[1], sys.argv[2]
    print(json.dumps({"science": science, "products": products}[what](work)))
