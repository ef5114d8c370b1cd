"""The plotting helpers draw what they promise: right places, right values, right shapes."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_pkg import StandardNormal  # noqa: E402
from course_pkg.plotting import (  # noqa: E402
    boundary,
    cell_centres,
    density_grid,
    grid_lines,
    image_grid,
    plot_density_1d,
    plot_density_grid,
    plot_image_grid,
    plot_samples,
    plot_warped_grid,
    polygon_area,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_cell_centres_tile_the_interval():
    centres = cell_centres(-1.0, 3.0, 4)
    np.testing.assert_allclose(centres, [-0.5, 0.5, 1.5, 2.5])


def test_density_grid_of_standard_normal_integrates_to_one():
    grid = density_grid(StandardNormal(2).log_prob, bounds=((-6, 6), (-6, 6)), resolution=150)
    assert grid.density.shape == (150, 150)
    assert grid.total_mass == pytest.approx(1.0, abs=1e-3)


def test_density_grid_rows_follow_the_second_coordinate():
    # A density that depends on x_2 only: every row must be constant, and rows must differ.
    def log_prob(points: torch.Tensor) -> torch.Tensor:
        return points[:, 1]

    grid = density_grid(log_prob, bounds=((0, 1), (0, 2)), resolution=8)
    np.testing.assert_allclose(grid.density, np.exp(grid.y)[:, None].repeat(8, axis=1), rtol=1e-6)


def test_plot_density_grid_draws_the_density_at_its_extent():
    bounds = ((-6.0, 6.0), (-5.0, 7.0))
    ax = plot_density_grid(StandardNormal(2).log_prob, bounds=bounds, resolution=120, colorbar=True)
    image = ax.images[-1]
    assert tuple(image.get_extent()) == (-6.0, 6.0, -5.0, 7.0)
    values = np.asarray(image.get_array())
    cell_area = (12 / 120) * (12 / 120)
    # The window cuts off P(x_2 < -5), which is negligible: the drawn mass is about 1.
    assert values.sum() * cell_area == pytest.approx(1.0, abs=2e-3)
    # The peak is drawn at the origin: row of y = 0 (5 units above the bottom edge), column of x = 0.
    row, column = np.unravel_index(values.argmax(), values.shape)
    assert abs(-5.0 + (row + 0.5) * 0.1) < 0.1 and abs(-6.0 + (column + 0.5) * 0.1) < 0.1
    assert values.max() == pytest.approx(1 / (2 * math.pi), rel=1e-2)


def test_plot_density_grid_of_a_uniform_square_is_flat_inside_and_zero_outside():
    def log_prob(points: torch.Tensor) -> torch.Tensor:
        inside = ((points >= 0) & (points <= 1)).all(dim=1)
        return torch.where(inside, torch.zeros_like(points[:, 0]), torch.full_like(points[:, 0], -math.inf))

    ax = plot_density_grid(log_prob, bounds=((-1, 2), (-1, 2)), resolution=30)
    values = np.asarray(ax.images[-1].get_array())
    assert values[10:20, 10:20] == pytest.approx(np.ones((10, 10)))
    assert values[:10].sum() == 0 and values[20:].sum() == 0
    assert values.sum() * 0.1 * 0.1 == pytest.approx(1.0)


def test_warped_grid_through_a_linear_map_lands_where_the_matrix_sends_it():
    matrix = torch.tensor([[2.0, 1.0], [0.5, 1.5]], dtype=torch.float64)
    bounds = ((0.0, 1.0), (0.0, 1.0))
    ax = plot_warped_grid(lambda p: p @ matrix.T, bounds=bounds, num_lines=3, resolution=20, dtype=torch.float64)
    lines = grid_lines(bounds, num_lines=3, resolution=20)
    assert len(ax.lines) == len(lines) == 6
    for drawn, original in zip(ax.lines, lines):
        expected = (original @ matrix.T).numpy()
        np.testing.assert_allclose(np.column_stack(drawn.get_data()), expected, atol=1e-12)
    # The corner (1, 1) goes to the sum of the columns, (3, 2).
    np.testing.assert_allclose(np.column_stack(ax.lines[2].get_data())[-1], [3.0, 2.0])
    assert ax.get_aspect() == 1.0


def test_warped_grid_fill_has_the_area_of_the_determinant():
    matrix = torch.tensor([[2.0, 1.0], [0.5, 1.5]])
    ax = plot_warped_grid(lambda p: p @ matrix.T, bounds=((0, 1), (0, 1)), num_lines=2, fill=True)
    (patch,) = ax.patches
    outline = patch.get_xy()
    assert polygon_area(outline) == pytest.approx(torch.linalg.det(matrix).item(), rel=1e-5)


def test_warped_grid_of_a_nonlinear_map_follows_the_map():
    def swirl(points: torch.Tensor) -> torch.Tensor:
        angle = points.norm(dim=1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        return torch.stack([cos * points[:, 0] - sin * points[:, 1], sin * points[:, 0] + cos * points[:, 1]], dim=1)

    ax = plot_warped_grid(swirl, bounds=((-1, 1), (-1, 1)), num_lines=5, resolution=50, dtype=torch.float64)
    for drawn, original in zip(ax.lines, grid_lines(((-1, 1), (-1, 1)), 5, 50)):
        np.testing.assert_allclose(np.column_stack(drawn.get_data()), swirl(original).numpy(), atol=1e-12)
        # A rotation about the origin keeps every point's distance to it.
        np.testing.assert_allclose(np.hypot(*drawn.get_data()), original.norm(dim=1).numpy(), atol=1e-12)


def test_boundary_is_closed_and_counter_clockwise():
    outline = boundary(((0, 2), (0, 3)), resolution=10)
    assert outline.shape == (41, 2)
    torch.testing.assert_close(outline[0], outline[-1])
    assert polygon_area(outline) == pytest.approx(6.0)
    assert polygon_area(outline.flip(0)) == pytest.approx(-6.0)


def test_plot_samples_scatters_the_points_with_equal_aspect():
    points = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    ax = plot_samples(points, bounds=((-4, 4), (-3, 3)))
    (collection,) = ax.collections
    np.testing.assert_allclose(collection.get_offsets(), points.numpy())
    assert ax.get_xlim() == (-4, 4) and ax.get_ylim() == (-3, 3)
    assert ax.get_aspect() == 1.0


def test_plot_samples_refuses_points_that_are_not_two_dimensional():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot_samples(np.zeros((10, 3)))


def test_image_grid_puts_each_image_in_its_tile():
    images = torch.arange(5, dtype=torch.float32)[:, None, None, None].expand(5, 1, 3, 4) / 10
    picture = image_grid(images, num_columns=2, padding=1, pad_value=-1.0)
    assert picture.shape == (1 + 3 * 4, 1 + 2 * 5)
    for k in range(5):
        top, left = 1 + (k // 2) * 4, 1 + (k % 2) * 5
        assert np.all(picture[top : top + 3, left : left + 4] == pytest.approx(k / 10))
    # The sixth tile is empty, and the padding between tiles keeps pad_value.
    assert np.all(picture[9:12, 6:10] == -1.0)
    assert np.all(picture[0] == -1.0) and np.all(picture[:, 5] == -1.0)


def test_image_grid_keeps_colour_channels_last():
    images = torch.zeros(2, 3, 2, 2)
    images[1, 0] = 1.0  # the second image is pure red
    picture = image_grid(images, num_columns=2, padding=0)
    assert picture.shape == (2, 4, 3)
    assert np.all(picture[:, 2:, 0] == 1.0) and np.all(picture[:, 2:, 1:] == 0.0) and np.all(picture[:, :2] == 0.0)


def test_plot_image_grid_shows_the_tiled_picture():
    images = torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    ax = plot_image_grid(images, num_columns=3, padding=1)
    shown = np.asarray(ax.images[-1].get_array())
    np.testing.assert_allclose(shown, image_grid(images, num_columns=3, padding=1), atol=1e-7)
    assert ax.images[-1].get_clim() == (0.0, 1.0)


def test_plot_density_1d_histogram_of_uniform_is_flat_at_its_density():
    samples = 3 * torch.rand(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1
    ax = plot_density_1d(samples, lambda x: np.full_like(x, 1 / 3), bounds=(1, 4), bins=20)
    heights = np.array([bar.get_height() for bar in ax.patches])
    assert heights.shape == (20,)
    np.testing.assert_allclose(heights, 1 / 3, atol=0.02)
    (curve,) = ax.lines
    np.testing.assert_allclose(curve.get_ydata(), 1 / 3)


# ------------------------------------------------------------------ chapter 3 helpers


def test_plot_log_density_grid_draws_log10_of_the_density_clipped_at_the_floor():
    from course_pkg.plotting import plot_log_density_grid

    bounds = ((-6.0, 6.0), (-6.0, 6.0))
    ax = plot_log_density_grid(StandardNormal(2).log_prob, bounds=bounds, resolution=60, floor=-5.0, colorbar=True)
    image = ax.images[-1]
    values = np.asarray(image.get_array())
    assert tuple(image.get_extent()) == (-6.0, 6.0, -6.0, 6.0)
    grid = density_grid(StandardNormal(2).log_prob, bounds=bounds, resolution=60)
    inside = grid.density > 1e-5
    np.testing.assert_allclose(values[inside], np.log10(grid.density[inside]), atol=1e-5)
    # Far out (log10 p below -5) the picture holds the floor, and nothing lies below it.
    assert values[0, 0] == -5.0 and values.min() == -5.0
    assert values.max() == pytest.approx(-math.log10(2 * math.pi), abs=1e-2)
    assert image.get_clim()[0] == -5.0


def test_plot_log_density_grid_keeps_densities_that_underflow_exp():
    from course_pkg.plotting import plot_log_density_grid

    def log_prob(points: torch.Tensor) -> torch.Tensor:
        return torch.full_like(points[:, 0], -1000.0)  # exp(-1000) is 0 in float64

    ax = plot_log_density_grid(log_prob, bounds=((0, 1), (0, 1)), resolution=4, floor=-1000.0)
    np.testing.assert_allclose(np.asarray(ax.images[-1].get_array()), -1000.0 / math.log(10))


def test_plot_colored_samples_gives_each_point_its_value():
    from course_pkg.plotting import plot_colored_samples

    points = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    values = points[:, 0] * 2
    ax = plot_colored_samples(points, values, bounds=((-4, 4), (-4, 4)))
    collection = ax.collections[-1]
    np.testing.assert_allclose(collection.get_offsets(), points.numpy())
    np.testing.assert_allclose(collection.get_array(), values.numpy())
    assert ax.get_xlim() == (-4, 4) and ax.get_aspect() == 1.0


def test_plot_colored_samples_refuses_mismatched_values():
    from course_pkg.plotting import plot_colored_samples

    with pytest.raises(ValueError, match="one value per point"):
        plot_colored_samples(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot_colored_samples(np.zeros((10, 3)), np.zeros(10))
