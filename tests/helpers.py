"""Generic helpers for testing flow layers; every test module may use (and add to) them.

The flow invariants themselves (log-det against the numerical Jacobian, round trip, per-sample
independence) live in :mod:`course_pkg.testing`, which students and the hidden checks use too;
these are the extra checks the package's own tests make on every layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from course_pkg.flows import ActNorm, Flow, Inverse
from course_pkg.testing import (
    autograd_batch_jacobian,
    check_inverse,
    check_log_det,
    check_samples_independent,
    log_abs_det,
)

FlowMethod = Callable[[Tensor], tuple[Tensor, Tensor]]


def randomize_parameters(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Fill every parameter of ``module`` with ``N(0, scale^2)`` values drawn from ``seed``; returns ``module``.

    So that a layer left at an identity (or any special) initialisation cannot pass a check by
    accident. Buffers are left alone. Values are drawn on the CPU in float64, then cast, so the same
    seed gives the same layer on every device and dtype.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            values = torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * scale
            parameter.copy_(values.to(parameter))
    return module


class FakeResponse:
    """What ``urllib.request.urlopen`` returns, answering with ``payload``: downloads without a network."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __enter__(self) -> "FakeResponse":
        return self

    def __exit__(self, *args: object) -> bool:
        return False

    def read(self) -> bytes:
        return self.payload


def actnorm_initialized(flow: nn.Module) -> nn.Module:
    """Mark every ActNorm in ``flow`` as initialised, so that the (randomised) parameters are the ones tested."""
    for module in flow.modules():
        if isinstance(module, ActNorm):
            module.initialized.fill_(True)
    return flow


def standard_normal(*shape: int) -> Callable[[torch.Generator], Tensor]:
    """An input maker for :class:`FlowCase`: a float64 ``N(0, 1)`` batch of ``shape`` from a generator."""
    return lambda generator: torch.randn(shape, generator=generator, dtype=torch.float64)


def flow_method(layer: nn.Module, direction: str) -> FlowMethod:
    """``layer.forward`` or ``layer.inverse`` by name: the map under test, returning ``(output, log_det)``."""
    if direction not in ("forward", "inverse"):
        raise ValueError(f"direction is 'forward' or 'inverse', got {direction!r}")
    return getattr(layer, direction)


def check_autograd_log_det(layer: nn.Module, x: Tensor, direction: str = "forward", atol: float = 1e-8) -> None:
    """The reported ``log_det`` equals ``log|det J|`` of the autograd Jacobian of the same map."""
    method = flow_method(layer, direction)
    _, log_det = method(x)
    expected = log_abs_det(autograd_batch_jacobian(lambda v: method(v)[0], x))
    torch.testing.assert_close(log_det, expected, atol=atol, rtol=atol, msg=f"{direction} log_det against autograd")


def check_batch_independence(layer: nn.Module, x: Tensor, direction: str = "forward") -> None:
    """Replacing sample 0 by a copy of the last sample changes no other sample's output or log-det
    (:func:`course_pkg.testing.check_samples_independent`, to the last bit), and the replaced sample
    then comes out as the last one does.

    Copying a valid sample keeps inputs inside the layer's domain (logit, sigmoid inverse ...).
    """
    flow = layer if direction == "forward" else Inverse(layer)
    check_samples_independent(flow, x, atol=0, rtol=0)
    changed = x.clone()
    changed[0] = x[-1]
    with torch.no_grad():
        output, log_det = flow(changed)
    torch.testing.assert_close(output[0], output[-1])
    torch.testing.assert_close(log_det[0], log_det[-1])


def check_gradients_reach_parameters(layer: nn.Module, x: Tensor, direction: str = "forward") -> None:
    """The input and every parameter get a finite, not identically zero gradient.

    The loss is ``sum(output^2) + sum(log_det)``, so both the map and its log-det are differentiated.
    """
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    output, log_det = flow_method(layer, direction)(x)
    (output.pow(2).sum() + log_det.sum()).backward()
    for name, gradient in [("the input", x.grad), *((repr(n), p.grad) for n, p in layer.named_parameters())]:
        assert gradient is not None, f"{direction}: no gradient reached {name}"
        assert torch.isfinite(gradient).all(), f"{direction}: non-finite gradient for {name}"
        assert gradient.abs().sum() > 0, f"{direction}: gradient of {name} is identically zero"


def check_rejects_shape(layer: nn.Module, shape: tuple[int, ...], message: str, inverse_message: str = "") -> None:
    """Both directions raise a ``ValueError`` containing ``message`` (``inverse_message`` for ``inverse``).

    Literal substrings, not patterns. The input of ``shape`` is filled with 0.5, inside every
    layer's domain, so only the shape can be at fault.
    """
    x = torch.full(shape, 0.5)
    for direction, expected in [("forward", message), ("inverse", inverse_message or message)]:
        with pytest.raises(ValueError, match=re.escape(expected)):
            flow_method(layer, direction)(x)


def check_leaves_input_unchanged(layer: nn.Module, x: Tensor, direction: str = "forward") -> None:
    """The layer does not modify its input in place."""
    before = x.clone()
    with torch.no_grad():
        flow_method(layer, direction)(x)
    torch.testing.assert_close(x, before, atol=0, rtol=0, msg=f"{direction} modified its input in place")


@dataclass
class FlowCase:
    """A flow layer and a batch to test it on, built with randomised parameters.

    ``make_layer()`` builds the layer (float32, as ``nn.Module`` does); ``make_input(generator)``
    draws a float64 batch inside the layer's domain. ``build(dtype)`` randomises the parameters
    from ``seed`` and casts both to ``dtype``.
    """

    name: str
    make_layer: Callable[[], Flow]
    make_input: Callable[[torch.Generator], Tensor]
    seed: int = 0
    scale: float = 0.5

    def build(self, dtype: torch.dtype = torch.float64) -> tuple[Flow, Tensor]:
        layer = randomize_parameters(self.make_layer(), self.seed, self.scale).to(dtype)
        x = self.make_input(torch.Generator().manual_seed(self.seed + 1)).to(dtype)
        return layer, x


class FlowContract:
    """The checks every flow layer must pass, for the cases of one test module.

    Subclass it as ``TestSomething`` and give the subclass a fixture ``case`` returning a
    :class:`FlowCase` (parametrised over the module's cases); pytest collects these methods there.
    Every check runs in float64 on randomised parameters, in both directions.
    """

    @pytest.mark.parametrize("direction", ["forward", "inverse"])
    def test_log_det_matches_numerical_jacobian(self, case: FlowCase, direction: str) -> None:
        layer, x = case.build()
        if direction == "forward":
            check_log_det(layer, x)
        else:
            check_log_det(Inverse(layer), _latent(layer, x))

    @pytest.mark.parametrize("direction", ["forward", "inverse"])
    def test_log_det_matches_autograd_jacobian(self, case: FlowCase, direction: str) -> None:
        layer, x = case.build()
        check_autograd_log_det(layer, x if direction == "forward" else _latent(layer, x), direction)

    def test_inverse_round_trip_and_log_det(self, case: FlowCase) -> None:
        layer, x = case.build()
        check_inverse(layer, x)
        check_inverse(Inverse(layer), _latent(layer, x))

    @pytest.mark.parametrize("direction", ["forward", "inverse"])
    def test_batch_elements_are_independent(self, case: FlowCase, direction: str) -> None:
        layer, x = case.build()
        check_batch_independence(layer, x if direction == "forward" else _latent(layer, x), direction)

    @pytest.mark.parametrize("direction", ["forward", "inverse"])
    def test_gradients_reach_every_parameter(self, case: FlowCase, direction: str) -> None:
        layer, x = case.build()
        check_gradients_reach_parameters(layer, x if direction == "forward" else _latent(layer, x), direction)

    @pytest.mark.parametrize("direction", ["forward", "inverse"])
    def test_input_is_not_modified(self, case: FlowCase, direction: str) -> None:
        layer, x = case.build()
        check_leaves_input_unchanged(layer, x if direction == "forward" else _latent(layer, x), direction)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_shapes_and_dtypes(self, case: FlowCase, dtype: torch.dtype) -> None:
        layer, x = case.build(dtype)
        z, log_det = layer(x)
        x_again, inverse_log_det = layer.inverse(z)
        for name, value, shape in [
            ("z", z, x.shape),
            ("log_det", log_det, (x.shape[0],)),
            ("inverse(z)", x_again, x.shape),
            ("inverse log_det", inverse_log_det, (x.shape[0],)),
        ]:
            assert value.shape == shape, f"{name}: expected shape {tuple(shape)}, got {tuple(value.shape)}"
            assert value.dtype == dtype, f"{name}: expected {dtype}, got {value.dtype}"
        tolerance = 1e-4 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(x_again, x, atol=tolerance, rtol=tolerance)
        torch.testing.assert_close(inverse_log_det, -log_det, atol=tolerance, rtol=tolerance)


def _latent(layer: Flow, x: Tensor) -> Tensor:
    """A point in the latent space to test the inverse direction at: ``forward(x)``, detached."""
    with torch.no_grad():
        return layer(x)[0]


def uniform(low: float, high: float, *shape: int) -> Callable[[torch.Generator], Tensor]:
    """An input maker for :class:`FlowCase`: a float64 batch of ``shape``, uniform in ``[low, high)``.

    For layers with a bounded domain (logit preprocessing, dequantized pixels in ``[0, 1]``).
    """
    return lambda generator: low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


@pytest.fixture(scope="module")
def single_threaded() -> Iterator[None]:
    """Run a test module on one CPU thread, restoring the count afterwards.

    Tiny tensors gain nothing from more threads, and on a busy machine (two cores shared with
    other jobs) OpenMP's waiting threads make them many times slower. Use it in a module with
    ``from helpers import single_threaded`` and ``pytestmark = pytest.mark.usefixtures("single_threaded")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
