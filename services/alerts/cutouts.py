"""Cutouts for alert packets: small FITS images (with their WCS) around a DiaSource."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.nddata import Cutout2D, NoOverlapError
from astropy.wcs import WCS

from dms.services.alerts.packets import AlertPacketError

DEFAULT_SIZE = 30  # pixels: Rubin's stamps are ~30 x 30


def stamp(image: np.ndarray, x: float, y: float, wcs: WCS | None = None, size: int = DEFAULT_SIZE) -> bytes:
    """A FITS file of the `size` x `size` pixels of `image` centred on pixel (x, y) (zero-based), with the
    cutout's WCS when `wcs` is given; parts outside the image are NaN."""
    try:
        cut = Cutout2D(image, (x, y), size, wcs=wcs, mode="partial", fill_value=np.nan, copy=True)
    except NoOverlapError:
        raise AlertPacketError(f"cutout at pixel ({x:.1f}, {y:.1f}) lies outside the image") from None
    header = cut.wcs.to_header() if cut.wcs is not None else fits.Header()
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(cut.data, dtype=np.float32), header=header).writeto(buffer)
    return buffer.getvalue()


class StampWriter:
    """`stamp` for many positions on one image, ~10x faster: the FITS header is rendered once and only the
    reference pixel changes per stamp (a cutout's WCS is the image's with CRPIX moved by the cutout's
    origin, as Cutout2D makes it), and the data block is written directly (big-endian float32, padded to
    2880 bytes). Reads back equal to `stamp`'s file."""

    BLOCK = 2880

    def __init__(self, image: np.ndarray, wcs: WCS | None = None, size: int = DEFAULT_SIZE) -> None:
        self.image = image
        self.size = size
        header = fits.PrimaryHDU(np.zeros((size, size), np.float32), header=self._wcs_header(wcs)).header
        self.crpix = (header.get("CRPIX1"), header.get("CRPIX2"))
        cards = [card.image for card in header.cards]
        self._crpix_at = [i for i, c in enumerate(cards) if c.startswith(("CRPIX1  ", "CRPIX2  "))]
        self._cards = cards

    @staticmethod
    def _wcs_header(wcs: WCS | None) -> fits.Header:
        return wcs.to_header() if wcs is not None else fits.Header()

    def stamp(self, x: float, y: float) -> bytes:
        try:
            cut = Cutout2D(self.image, (x, y), self.size, mode="partial", fill_value=np.nan, copy=True)
        except NoOverlapError:
            raise AlertPacketError(f"cutout at pixel ({x:.1f}, {y:.1f}) lies outside the image") from None
        cards = list(self._cards)
        # the WCS moves by the unclipped origin (negative past the image's edge), as Cutout2D moves its own
        ox, oy = getattr(cut, "_origin_original_true", cut.origin_original)
        for index, (key, value) in zip(
            self._crpix_at,
            (("CRPIX1", self.crpix[0]), ("CRPIX2", self.crpix[1])),
            strict=False,  # no CRPIX cards without a WCS
        ):
            comment = fits.Card.fromstring(cards[index]).comment
            cards[index] = fits.Card(key, float(value) - (ox if key == "CRPIX1" else oy), comment).image
        text = "".join(cards) + "END".ljust(80)
        head = text.encode("ascii").ljust(-(-len(text) // self.BLOCK) * self.BLOCK, b" ")
        data = np.asarray(cut.data, ">f4").tobytes()
        return head + data.ljust(-(-len(data) // self.BLOCK) * self.BLOCK, b"\0")
