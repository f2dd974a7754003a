"""StampWriter (many cutouts of one image) writes exactly the FITS files `stamp` (astropy's Cutout2D and
writer) writes, inside the image and across its edges."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from dms.services.alerts.cutouts import StampWriter, stamp
from dms.services.alerts.packets import AlertPacketError


def _wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.2, -30.1]
    wcs.wcs.crpix = [512.5, 400.5]
    wcs.wcs.cd = [[-5.5e-5, 1e-7], [2e-7, 5.5e-5]]
    return wcs


@pytest.mark.parametrize("size", [30, 31])
def test_stamps_equal_astropy_cutouts_byte_for_byte(size: int) -> None:
    rng = np.random.default_rng(size)
    image = rng.normal(0, 10, (700, 900)).astype(np.float32)
    wcs = _wcs()
    writer = StampWriter(image, wcs, size)
    positions = [*rng.uniform(-10, 910, (40, 2)), (0.0, 0.0), (899.4, 699.6), (-14.0, 3.0), (450.5, 350.5)]
    for x, y in positions:
        try:
            expected = stamp(image, float(x), float(y), wcs, size)
        except AlertPacketError:
            with pytest.raises(AlertPacketError):
                writer.stamp(float(x), float(y))
            continue
        assert writer.stamp(float(x), float(y)) == expected, (x, y)
    with pytest.raises(AlertPacketError, match="outside the image"):
        writer.stamp(5000.0, 10.0)
