"""CT-like image degradation: partial-volume blur and correlated (ramp x apodisation) noise."""

from __future__ import annotations

import numpy as np
from scipy import fft
from scipy.ndimage import gaussian_filter

PSF_SIGMA_PX = 0.6
"""In-plane partial-volume blur (the slice profile is emulated by averaging sub-slice samples)."""

NPS_CUTOFF = 0.28
"""Apodisation cut-off (cycles/pixel) of the noise power spectrum ``f * exp(-(f/fc)^2)``.

It peaks near 0.2 cycles/pixel, as a standard soft-tissue kernel does at ~0.75 mm pixels; the
texture is defined per pixel so a downsized phantom keeps a CT-like (not white) grain.
"""


def blur(volume: np.ndarray) -> np.ndarray:
    """In-plane Gaussian partial-volume blur of a ``[Z, Y, X]`` volume."""
    return gaussian_filter(volume, sigma=(0.0, PSF_SIGMA_PX, PSF_SIGMA_PX), mode="nearest")


def noise_filter(shape: tuple[int, int]) -> np.ndarray:
    """rfft2-domain amplitude filter ``sqrt(ramp x apodisation)``, normalised to unit variance."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    full = np.sqrt(f * np.exp(-((f / NPS_CUTOFF) ** 2)))
    norm = np.sqrt(np.mean(full**2))
    fxr = np.fft.rfftfreq(shape[1])[None, :]
    fr = np.hypot(fy, fxr)
    return (np.sqrt(fr * np.exp(-((fr / NPS_CUTOFF) ** 2))) / norm).astype(np.float32)


def ct_noise(rng: np.random.Generator, shape: tuple[int, int, int], sd: float) -> np.ndarray:
    """Correlated noise ``[Z, Y, X]`` with standard deviation ``sd`` HU (independent slices)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = fft.rfft2(white, axes=(1, 2))
    spectrum *= noise_filter(shape[1:])[None] * np.float32(sd)
    return fft.irfft2(spectrum, s=shape[1:], axes=(1, 2))
