"""The public self-checks: they must find wrong flows and say clearly what is wrong."""

from __future__ import annotations

import pytest
import torch

from course_pkg import Flow
from course_pkg.testing import (
    CheckFailed,
    assert_close,
    autograd_batch_jacobian,
    check_inverse,
    check_log_det,
    check_samples_independent,
    numerical_batch_jacobian,
    numerical_jacobian,
)


class Scale(Flow):
    """``z = s * x`` with a configurable, possibly wrong, log-det and inverse."""

    def __init__(self, scale: float, log_det_error: float = 0.0, inverse_error: float = 0.0) -> None:
        super().__init__()
        self.scale, self.log_det_error, self.inverse_error = scale, log_det_error, inverse_error

    def log_det(self, x):
        return torch.full((x.shape[0],), x.shape[1] * torch.log(torch.tensor(abs(self.scale))).item(), dtype=x.dtype)

    def forward(self, x):
        return self.scale * x, self.log_det(x) + self.log_det_error

    def inverse(self, z):
        return z / self.scale + self.inverse_error, -self.log_det(z)


def test_numerical_jacobian_of_a_nonlinear_map():
    x = torch.tensor([0.3, -1.2, 0.8], dtype=torch.float64)
    matrix = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0], [3.0, 0.0, 1.0]], dtype=torch.float64)
    f = lambda v: torch.tanh(matrix @ v)  # noqa: E731
    expected = torch.diag(1 - torch.tanh(matrix @ x) ** 2) @ matrix
    torch.testing.assert_close(numerical_jacobian(f, x), expected, atol=1e-8, rtol=0)


def test_numerical_jacobian_wants_a_single_vector():
    with pytest.raises(ValueError, match="1-D tensor"):
        numerical_jacobian(torch.tanh, torch.zeros(2, 3))


def test_batch_jacobians_agree_for_images():
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    weight = torch.randn(18, 18, dtype=torch.float64)
    f = lambda v: torch.sin(v.reshape(v.shape[0], -1) @ weight.T).reshape(v.shape)  # noqa: E731
    numerical = numerical_batch_jacobian(f, x)
    assert numerical.shape == (4, 18, 18)
    torch.testing.assert_close(numerical, autograd_batch_jacobian(f, x), atol=1e-7, rtol=0)


def test_check_log_det_accepts_a_correct_flow_and_names_the_error_of_a_wrong_one():
    x = torch.randn(5, 3, dtype=torch.float64)
    check_log_det(Scale(-2.0), x)
    with pytest.raises(CheckFailed, match=r"forward log_det .* expected 2.0794.*got 2.1794.*largest error 0.1"):
        check_log_det(Scale(-2.0, log_det_error=0.1), x)


def test_check_inverse_catches_a_wrong_inverse():
    x = torch.randn(5, 3, dtype=torch.float64)
    check_inverse(Scale(3.0), x)
    with pytest.raises(CheckFailed, match=r"inverse\(forward\(x\)\) against x"):
        check_inverse(Scale(3.0, inverse_error=1e-3), x)


def test_check_samples_independent_catches_a_layer_that_mixes_the_batch():
    class CentreTheBatch(Flow):
        def forward(self, x):
            return x - x.mean(dim=0), torch.zeros(x.shape[0], dtype=x.dtype)

    x = torch.randn(5, 3, dtype=torch.float64)
    check_samples_independent(Scale(3.0), x)
    changed = x.clone()
    changed[2] += 1.0
    check_samples_independent(Scale(3.0), x, changed, atol=0, rtol=0)
    with pytest.raises(CheckFailed, match=r"output of the samples that did not change"):
        check_samples_independent(CentreTheBatch(), x)
    with pytest.raises(ValueError, match=r"some sample differs"):
        check_samples_independent(Scale(3.0), x, x.clone())


def test_a_layer_that_changes_its_input_fails_unless_the_check_copies_the_inputs():
    class ScaleInPlace(Scale):
        def forward(self, x):
            z, log_det = super().forward(x)
            x.mul_(0)
            return z, log_det

    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(CheckFailed, match=r"inverse\(forward\(x\)\) against x"):
        check_inverse(ScaleInPlace(2.0), x.clone())
    before = x.clone()
    check_inverse(ScaleInPlace(2.0), x, copy_inputs=True)
    check_log_det(ScaleInPlace(2.0), x, copy_inputs=True)
    torch.testing.assert_close(x, before, atol=0, rtol=0)


def test_checks_refuse_a_layer_that_does_not_return_a_pair():
    class Bare(Flow):
        def forward(self, x):
            return x

    with pytest.raises(CheckFailed, match=r"should return a pair \(output, log_det\)"):
        check_log_det(Bare(), torch.zeros(2, 2, dtype=torch.float64))


def test_assert_close_reports_nan_shape_and_type():
    expected = torch.zeros(3)
    with pytest.raises(CheckFailed, match="non-finite"):
        assert_close("values", torch.tensor([0.0, float("nan"), 0.0]), expected)
    with pytest.raises(CheckFailed, match=r"expected shape \(3,\), got \(3, 1\)"):
        assert_close("values", torch.zeros(3, 1), expected)
    with pytest.raises(CheckFailed, match="expected a torch.Tensor, got list"):
        assert_close("values", [0.0, 0.0, 0.0], expected)
