"""Association computed in the database equals a scipy KD-tree nearest-neighbour match of the positions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from apdb_support import field_positions, make_objects, tai
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from dms.services.apdb import Apdb, ApdbInputError
from dms.services.prompt.association import associate, cell_order, neighbour_ranges
from tests.hypothesis_profiles import examples

pytest_plugins = ["apdb_support"]  # the apdb fixture

MJD = 60_800.0


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1)


def _kdtree(objects: pd.DataFrame, sources: pd.DataFrame, radius_arcsec: float) -> dict[int, int]:
    """Nearest DiaObject within the radius of each source, by scipy on chord distances."""
    tree = cKDTree(_unit(objects["ra"].to_numpy(), objects["dec"].to_numpy()))
    chord = 2 * np.sin(np.radians(radius_arcsec / 3600) / 2)
    dist, index = tree.query(
        _unit(sources["ra"].to_numpy(), sources["dec"].to_numpy()), distance_upper_bound=chord
    )
    ids = objects["diaObjectId"].to_numpy()
    return {
        int(s): int(ids[i])
        for s, d, i in zip(sources["diaSourceId"], dist, index, strict=True)
        if np.isfinite(d)
    }


def _sources(
    rng: np.random.Generator, objects: pd.DataFrame, n_near: int, n_far: int, jitter: float
) -> pd.DataFrame:
    near = objects.sample(n_near, random_state=int(rng.integers(1 << 30)))
    offsets = rng.normal(0, jitter / 3600, (n_near, 2))
    far = field_positions(rng, n_far, 150.0, 2.0, 1.0)
    ra = np.concatenate(
        [near["ra"].to_numpy() + offsets[:, 0] / np.cos(np.radians(near["dec"].to_numpy())), far[:, 0]]
    )
    dec = np.concatenate([near["dec"].to_numpy() + offsets[:, 1], far[:, 1]])
    return pd.DataFrame({"diaSourceId": np.arange(10**9, 10**9 + len(ra)), "ra": ra % 360, "dec": dec})


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.0])
def test_association_equals_a_kdtree_match(apdb: Apdb, radius: float) -> None:
    rng = np.random.default_rng(int(radius * 10))
    objects = make_objects(rng, np.arange(1, 20_001), field_positions(rng, 20_000, 150.0, 2.0, 1.0), MJD)
    apdb.store(tai(MJD), objects)
    sources = _sources(rng, objects, n_near=3_000, n_far=1_000, jitter=radius / 2)
    result = associate(apdb, sources, radius)
    expected = _kdtree(objects, sources, radius)
    got = dict(zip(result.matched["diaSourceId"], result.matched["diaObjectId"], strict=True))
    assert got == expected
    assert 1_000 < len(expected) < len(sources)  # both matches and new objects occur
    assert sorted(result.new_object_ids) == sorted(set(sources["diaSourceId"]) - set(expected))
    assert (result.matched["distance_arcsec"] <= radius).all()
    ids = result.object_ids(sources["diaSourceId"].to_numpy())
    assert ids[0] == expected.get(int(sources["diaSourceId"][0]), int(sources["diaSourceId"][0]))


def test_only_current_versions_match(apdb: Apdb) -> None:
    rng = np.random.default_rng(3)
    objects = make_objects(rng, np.arange(1, 101), field_positions(rng, 100, 10.0, -30.0, 0.2), MJD)
    apdb.store(tai(MJD), objects)
    moved = objects.copy()
    moved["ra"] = moved["ra"] + 0.01  # the new versions are 30" away from the old ones
    apdb.store(tai(MJD + 1), moved)
    sources = pd.DataFrame({"diaSourceId": [7, 8], "ra": objects["ra"][:2], "dec": objects["dec"][:2]})
    assert len(associate(apdb, sources, 1.0).matched) == 0
    sources = pd.DataFrame({"diaSourceId": [7, 8], "ra": moved["ra"][:2], "dec": moved["dec"][:2]})
    assert list(associate(apdb, sources, 1.0).matched["diaObjectId"]) == [1, 2]


@settings(max_examples=examples(60), deadline=None)
@given(
    st.floats(0, 360, allow_nan=False, exclude_max=True),
    st.floats(-90, 90, allow_nan=False),
    st.floats(0.1, 30.0),
    st.floats(0, 1),
    st.floats(0, 2 * np.pi),
)
def test_the_cell_block_holds_every_point_within_the_radius(
    ra: float, dec: float, radius: float, fraction: float, angle: float
) -> None:
    """Any point within the radius of a source falls in one of the ranges searched for it."""
    import astropy.units as u
    import healpy
    from astropy.coordinates import SkyCoord

    other = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(
        angle * u.rad, fraction * radius * u.arcsec
    )
    cells = neighbour_ranges(np.array([ra]), np.array([dec]), radius)
    h29 = int(healpy.ang2pix(1 << 29, other.ra.deg, other.dec.deg, nest=True, lonlat=True))
    assert ((cells["lo"] <= h29) & (h29 <= cells["hi"])).any(), (cell_order(radius), ra, dec)


def test_bad_input_is_named(apdb: Apdb) -> None:
    with pytest.raises(ApdbInputError, match="radius"):
        associate(apdb, pd.DataFrame({"diaSourceId": [1], "ra": [1.0], "dec": [1.0]}), 0)
    with pytest.raises(ApdbInputError, match=r"columns \['dec'\]"):
        associate(apdb, pd.DataFrame({"diaSourceId": [1], "ra": [1.0]}), 1.0)
    with pytest.raises(ApdbInputError, match="finite ra"):
        associate(apdb, pd.DataFrame({"diaSourceId": [1], "ra": [np.nan], "dec": [1.0]}), 1.0)
    empty = associate(apdb, pd.DataFrame({"diaSourceId": [], "ra": [], "dec": []}), 1.0)
    assert len(empty.matched) == 0 and len(empty.new_object_ids) == 0
