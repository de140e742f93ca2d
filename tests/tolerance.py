"""The one pixel tolerance for images computed by different kernels (other batch shapes, other
memory layouts, other CPUs).

Other matrix shapes take other BLAS kernels, which sum in another order, and kernels differ
between CPUs (AVX2, AVX-512, AMX). Measured with benchmarks/batch_tolerance.py (tiny preset,
10 steps): batch 1 vs 4 bit-identical on AVX2; the same images under another kernel set
(ATEN_CPU_CAPABILITY=default vs AVX2) differ by at most 1 level, mean 0.007 levels, EZIGen's
loops unchanged. The bounds leave room for CPUs we could not measure while staying far below the
difference between two distinct requests (~40 levels mean). Bit-equality is asserted only where
the computation is the same.
"""

import numpy as np

PIXEL_TOLERANCE = 8          # 8-bit levels, any pixel
MEAN_TOLERANCE = 0.25        # 8-bit levels, mean over the image


def assert_images_close(a, b, what: str = "") -> None:
    """Two images (PIL or arrays) agree within the cross-kernel tolerance."""
    diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
    assert diff.max() <= PIXEL_TOLERANCE and diff.mean() <= MEAN_TOLERANCE, (what, diff.max(), diff.mean())
