"""The wide-kernel Gaussian blur as two matrix products (postprocess.blur_matrix) equals scipy's, as the
narrow-kernel conv1d path does; the presets' blur (sigma = 5 % of the work size) takes the matrix path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from ovss_ros.pnp_ovss import postprocess


@pytest.mark.parametrize("shape,sigma", [((240, 320), 16.0), ((61, 37), 9.5), ((200, 300), 1.0), ((5, 400), 2.0)])
def test_blur_matches_scipy_on_both_paths(shape, sigma):
    x = np.random.default_rng(1).random((3, *shape)).astype(np.float32)
    ours = postprocess.gaussian_blur(torch.from_numpy(x), sigma).numpy()
    ref = np.stack([gaussian_filter(c, sigma) for c in x])       # mode='reflect', truncate=4
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_blur_matrix_rows_are_the_reflected_kernel():
    m = postprocess.blur_matrix(50, 16.0, 64, torch.float64, torch.device("cpu"))
    torch.testing.assert_close(m.sum(dim=1), torch.ones(50, dtype=torch.float64))   # reflection keeps all weight
    step = torch.zeros(50, dtype=torch.float64)
    step[25:] = 1
    ref = gaussian_filter(step.numpy(), 16.0)
    np.testing.assert_allclose((m @ step).numpy(), ref, atol=1e-12)
