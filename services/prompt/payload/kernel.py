"""PSF matching by the method of Alard & Lupton (1998): the kernel that convolves one image into another is a
linear combination of Gaussians times polynomials, fitted by least squares on stamps around bright isolated
stars, with a differential background term.

Why Alard-Lupton and not ZOGY: prompt processing must run in seconds per detector on a CPU, and AL needs
neither the images' PSF models as pixel arrays nor an FFT of whole images per step: a few hundred small
convolutions of star stamps and one linear solve give the kernel, and the kernel fit itself absorbs errors in
the astrometric alignment, the PSF shapes and the photometric scale (ZOGY needs each of them right, or the
difference shows the error). Its known weakness, deconvolution when the science image is sharper than the
template, is avoided as Rubin's ip_diffim does: the sharper image is always the one convolved. ZOGY's
optimality (its proper S/N image) matters most when the template is as noisy as the science image; here
templates coadd several visits. The Gaussian widths scale with the PSF mismatch, as in ip_diffim's
`alardSigGauss` with `scaleByFwhm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field
from scipy.signal import fftconvolve

from dms.services.prompt.payload.errors import SubtractionError
from dms.tasks import TaskConfig

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


class KernelConfig(TaskConfig):
    sigma_factors: tuple[float, ...] = Field(
        default=(0.5, 1.0, 2.0),
        description="Widths of the basis Gaussians, in units of the PSF mismatch sigma (at least 0.7 px).",
    )
    degrees: tuple[int, ...] = Field(
        default=(4, 3, 2), description="Polynomial degree multiplying each basis Gaussian."
    )
    max_stamps: int = Field(default=80, ge=3, le=1000, description="Stars used to fit the kernel.")
    min_stamps: int = Field(default=5, ge=1, le=100, description="Fewest stars that make a kernel fit.")
    stamp_snr: float = Field(default=20.0, gt=0, description="Peak S/N a kernel star needs.")
    fix_sum: bool = Field(
        default=True,
        description="Hold the kernel sum at the stars' median science/template flux ratio (robust scale).",
    )
    clip_sigma: float = Field(
        default=3.0, gt=0, description="Stamps whose residual is this far out are dropped."
    )


@dataclass
class MatchingKernel:
    """A fitted kernel: the pixels (sum = photometric ratio), the background term and the fit's quality."""

    image: np.ndarray
    background: float
    coefficients: np.ndarray
    stamps: int
    residual_rms: float  # rms of (target - model) / sigma over the kept stamps (1 = noise-limited)

    @property
    def sum(self) -> float:
        return float(self.image.sum())


def gaussian_basis(half: int, sigmas: list[float], degrees: list[int]) -> list[np.ndarray]:
    """The Alard-Lupton basis on a (2 half + 1)^2 grid: exp(-r^2 / 2 s^2) x^i y^j, i + j <= degree."""
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    basis = []
    for sigma, degree in zip(sigmas, degrees, strict=True):
        g = np.exp(-0.5 * (x**2 + y**2) / sigma**2)
        for i in range(degree + 1):
            for j in range(degree + 1 - i):
                b = g * (x / sigma) ** i * (y / sigma) ** j
                b /= np.sqrt((b**2).sum())
                basis.append(b)
    return basis


def basis_for(
    reference_sigma: float, target_sigma: float, config: KernelConfig
) -> tuple[int, list[np.ndarray]]:
    """The kernel half-size and basis for matching a PSF of `reference_sigma` to `target_sigma` (pixels)."""
    mismatch = float(np.sqrt(max(target_sigma**2 - reference_sigma**2, 0.0)))
    unit = max(mismatch, 0.7)
    sigmas = [unit * f for f in config.sigma_factors]
    half = int(np.clip(np.ceil(3.0 * max(sigmas)), 4, 15))
    return half, gaussian_basis(half, sigmas, list(config.degrees))


def fit_kernel(
    reference: np.ndarray,
    target: np.ndarray,
    target_variance: np.ndarray,
    stars: np.ndarray,
    half: int,
    basis: list[np.ndarray],
    *,
    stamp_half: int,
    min_stamps: int = 5,
    clip_sigma: float = 3.0,
    kernel_sum: float | None = None,
) -> MatchingKernel:
    """The kernel K (and background b) minimising |target - (K * reference + b)|^2 / variance on star stamps.

    `stars` are (x, y) pixel positions; a stamp is (2 stamp_half + 1)^2 pixels of the target, and the
    reference pixels within `half` more around it. With `kernel_sum` (the photometric ratio, measured
    robustly from the stars' flux ratios) the kernel's sum is held at it: the first basis function is
    normalised to sum 1 and the others to sum 0, as in Alard (2000), so a few stamps spoiled by a variable
    star or a transient cannot move the photometric scale."""
    if kernel_sum is not None:
        first = basis[0] / basis[0].sum()
        basis = [first] + [b - b.sum() * first for b in basis[1:]]
    rows, cols = reference.shape
    edge = stamp_half + half
    designs, targets, weights = [], [], []
    for x, y in np.round(stars).astype(int):
        if x - edge < 0 or y - edge < 0 or x + edge >= cols or y + edge >= rows:
            continue
        ref = reference[y - edge : y + edge + 1, x - edge : x + edge + 1]
        core = (slice(y - stamp_half, y + stamp_half + 1), slice(x - stamp_half, x + stamp_half + 1))
        var = target_variance[core]
        if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(var)) and np.all(var > 0)):
            continue
        columns = [fftconvolve(ref, b, mode="valid").ravel() for b in basis]
        columns.append(np.ones(columns[0].size))
        design = np.stack(columns, axis=1)
        wanted = target[core].ravel()
        if kernel_sum is not None:  # the fixed first term moves to the data side
            wanted = wanted - kernel_sum * design[:, 0]
            design = design[:, 1:]
        designs.append(design)
        targets.append(wanted)
        weights.append(1.0 / np.sqrt(var.ravel()))
    if len(designs) < min_stamps:
        raise SubtractionError(
            f"PSF matching needs at least {min_stamps} isolated bright stars away from the edges; found "
            f"{len(designs)}"
        )
    keep = np.ones(len(designs), bool)
    for _ in range(3):
        a = np.concatenate([d * w[:, None] for d, w, k in zip(designs, weights, keep, strict=True) if k])
        b = np.concatenate([t * w for t, w, k in zip(targets, weights, keep, strict=True) if k])
        solution, *_ = np.linalg.lstsq(a, b, rcond=None)
        chi = np.array(
            [
                np.sqrt(np.mean(((t - d @ solution) * w) ** 2))
                for d, t, w in zip(designs, targets, weights, strict=True)
            ]
        )
        centre = np.median(chi[keep])
        spread = 1.4826 * np.median(np.abs(chi[keep] - centre)) + 1e-6
        new_keep = chi < centre + clip_sigma * spread
        if new_keep.sum() < min_stamps or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    if kernel_sum is not None:
        solution = np.concatenate([[kernel_sum], solution])
    kernel = np.sum([c * b for c, b in zip(solution[:-1], basis, strict=True)], axis=0)
    return MatchingKernel(
        image=kernel,
        background=float(solution[-1]),
        coefficients=solution,
        stamps=int(keep.sum()),
        residual_rms=float(np.sqrt(np.mean(chi[keep] ** 2))),
    )


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The image convolved with the kernel (same shape; FFT)."""
    return fftconvolve(image, kernel, mode="same")
