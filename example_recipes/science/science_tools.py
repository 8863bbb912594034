"""Small tools of the real-pipeline example that have no cult-cargo cab: corrupt a simulated MS with
known gains, noise and RFI, and record what was injected (the truth the science checks compare with).

Runs in the ``sim`` tool venv (python-casacore, numpy); imported by the ``corrupt`` cab
(``flavour: python``), so it must stay importable without Stimela or stepcab.
"""

from __future__ import annotations

import json

import numpy as np


def injected_gains(nant: int, ncorr: int, seed: int) -> np.ndarray:
    """Per-antenna, per-correlation complex gains: amplitude 0.8..1.2, phase -60..60 degrees,
    antenna 0 phase-referenced to zero (QuartiCal's default reference antenna)."""
    rng = np.random.default_rng(seed)
    amp = rng.uniform(0.8, 1.2, size=(nant, ncorr))
    phase = np.deg2rad(rng.uniform(-60.0, 60.0, size=(nant, ncorr)))
    phase[0, :] = 0.0
    return amp * np.exp(1j * phase)


def corrupt(ms: str, truth: str, noise: float = 0.05, rfi_channel: int = 5, rfi_times: int = 2,
            rfi_amplitude: float = 300.0, seed: int = 42) -> None:
    """DATA = g_p MODEL_DATA g_q^* + complex Gaussian noise (``noise`` Jy per real/imaginary part), plus
    RFI: channel ``rfi_channel`` in every row and every channel of the middle ``rfi_times`` time slots.
    FLAG is cleared. ``truth`` (JSON) receives the gains and the RFI positions."""
    from casacore.tables import table

    with table(ms, readonly=False, ack=False) as t:
        model = t.getcol("MODEL_DATA")
        a1, a2, times = t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), t.getcol("TIME")
        with table(f"{ms}::ANTENNA", ack=False) as ant:
            nant = ant.nrows()
        nrow, nchan, ncorr = model.shape
        gains = injected_gains(nant, ncorr, seed)
        rng = np.random.default_rng(seed + 1)
        data = gains[a1][:, None, :] * model * np.conj(gains[a2])[:, None, :]
        data = data + noise * (rng.standard_normal(data.shape) + 1j * rng.standard_normal(data.shape))
        rfi = np.zeros(data.shape, dtype=bool)
        rfi[:, rfi_channel, :] = True
        unique_times = np.unique(times)
        middle = len(unique_times) // 2
        bad_times = unique_times[middle:middle + rfi_times]
        rfi[np.isin(times, bad_times), :, :] = True
        burst = rfi_amplitude * np.exp(2j * np.pi * rng.uniform(size=data.shape))
        data = np.where(rfi, data + burst, data).astype(model.dtype)
        t.putcol("DATA", data)
        t.putcol("FLAG", np.zeros(data.shape, dtype=bool))
        t.putcol("FLAG_ROW", np.zeros(nrow, dtype=bool))
    with open(truth, "w") as f:
        json.dump({"gains_re": gains.real.tolist(), "gains_im": gains.imag.tolist(),
                   "rfi_channel": rfi_channel, "rfi_times": [float(x) for x in bad_times],
                   "noise": noise, "nrow": int(nrow), "nchan": int(nchan), "ncorr": int(ncorr)}, f, indent=1)
