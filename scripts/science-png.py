"""Render the real pipeline's restored image (FITS) as the PNG shown in the README and
docs/science.md, with the PyBDSF catalogue's sources circled. Run with the cal tool venv's Python:

    $STEPCAB_SCIENCE_VENVS/cal/bin/python scripts/science-png.py WORKDIR docs/science-kat7.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.wcs import WCS  # noqa: E402


def main(work: str, png: str) -> None:
    with fits.open(f"{work}/kat7-image.fits") as hdul:
        data, wcs = np.squeeze(hdul[0].data), WCS(hdul[0].header).celestial
    with fits.open(f"{work}/kat7-srl.fits") as hdul:
        ra, dec = hdul[1].data["RA"], hdul[1].data["DEC"]
    fig = plt.figure(figsize=(5.5, 5), dpi=100)
    ax = fig.add_subplot(projection=wcs)
    im = ax.imshow(data, origin="lower", cmap="inferno", vmin=-0.05 * np.nanmax(data), vmax=0.5 * np.nanmax(data))
    x, y = wcs.world_to_pixel_values(ra, dec)
    ax.scatter(x, y, s=300, facecolors="none", edgecolors="cyan", linewidths=1)
    ax.set_xlabel("RA (J2000)")
    ax.set_ylabel("Dec (J2000)")
    ax.set_title("KAT-7 simulation: tclean after QuartiCal; PyBDSF sources", fontsize=9)
    fig.colorbar(im, ax=ax, label="Jy/beam", shrink=0.8)
    fig.savefig(png, bbox_inches="tight")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
