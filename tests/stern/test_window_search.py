"""Tests of stkit.stern.window_search: the smoothed window gradient, its surrogate, the perturbed windows."""

import pytest
import torch

from stkit.stern.stn import glimpse, theta_from_window
from stkit.stern.window_search import search_surrogate, smoothed_window_grad, window_coords, window_from_coords


def test_estimate_matches_the_gradient_of_a_quadratic():
    # For a quadratic loss the antithetic difference is exactly <grad, e>, so the estimate's
    # mean is the true gradient; with many pairs it must land close to it.
    gen = torch.Generator().manual_seed(0)
    window = torch.tensor([[0.5, 0.4, 0.1, -0.2], [0.3, 0.6, -0.3, 0.1]])
    target = torch.tensor([[-0.9, -0.7, 0.2, -0.1], [-1.0, -0.4, -0.2, 0.2]])
    a = torch.tensor([1.0, 2.0, 3.0, 0.5])

    def loss_of(w):
        return (a * (window_coords(w) - target) ** 2).sum(1)

    est = smoothed_window_grad(loss_of, window, sigma=0.02, pairs=20000, s_min=0.1, s_max=1.0, generator=gen)
    exact = 2 * a * (window_coords(window) - target)
    assert torch.allclose(est, exact, atol=0.03 * exact.abs().max()), (est, exact)


def test_it_sees_what_lies_outside_the_window_where_the_sampler_sees_nothing():
    # A bright blob to the right of a small window: the sampler's gradient is zero (no sample
    # point is near the blob); the smoothed estimate says "move right".
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    image = torch.exp(-((xx - 0.35) ** 2 + yy ** 2) / (2 * 0.12 ** 2))[None, None]  # (1, 1, 64, 64)
    window = torch.tensor([[0.25, 0.25, -0.5, 0.0]], requires_grad=True)

    def loss_of(w):  # darker glimpse = higher loss
        return -glimpse(image, theta_from_window(*w.unbind(1)), (16, 16)).mean((1, 2, 3))

    loss_of(window).sum().backward()
    sampler = window.grad.abs().max()  # the sampler's gradient: next to nothing (the blob's far tail)
    gen = torch.Generator().manual_seed(1)
    est = smoothed_window_grad(loss_of, window, sigma=0.3, pairs=256, s_min=0.2, s_max=1.0, generator=gen)
    assert est[0, 2] < -1000 * sampler and est[0, 2] < -10 * est[0, 3].abs(), (est, sampler)  # descent: move right


def test_surrogate_carries_the_estimate_to_the_window():
    window = torch.tensor([[0.5, 0.25, 0.1, -0.2]], requires_grad=True)
    g = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    search_surrogate(window, g).backward()
    # d(log s)/ds = 1 / s for the scales, identity for the centres
    assert torch.allclose(window.grad, g * torch.tensor([[1 / 0.5, 1 / 0.25, 1.0, 1.0]]))


def test_perturbed_windows_stay_inside_the_image():
    coords = torch.randn(1000, 4) * 3
    w = window_from_coords(coords, 0.25, 1.0)
    s, t = w[:, :2], w[:, 2:]
    assert (s >= 0.25).all() and (s <= 1.0).all() and (t.abs() <= 1 - s + 1e-6).all()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="window must be"):
        window_coords(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="positive"):
        window_coords(torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="sigma"):
        smoothed_window_grad(lambda w: w[:, 0], torch.full((2, 4), 0.5), sigma=0.0)
    with pytest.raises(ValueError, match="one loss per window"):
        smoothed_window_grad(lambda w: w, torch.full((2, 4), 0.5), sigma=0.1)
