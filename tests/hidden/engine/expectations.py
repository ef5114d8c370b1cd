"""Helpers shared by the hidden checks of the flow-layer exercises (instructor-only).

Each module of ``checks/`` (``ex02_elementwise_linear.py``, ``ex03_coupling.py``, ...) registers its
checks with the decorator from :func:`single_threaded_checks` and builds them from these
expectations and from the flow invariants of :mod:`course_pkg.testing`, the one text of those
(log-det against the numerical Jacobian in float64, round trip, per-sample independence): the
check server imports it before any student code runs and undoes, or fails as tampering, whatever
a submission changes in it. For gradients the ground truth is central differences in the
parameters. Every failed expectation raises ``AssertionError`` with what was expected and what
came back.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor, nn

from course_pkg import testing as reference
from course_grading.engine.grader import DelegationRefused, Registry


def single_threaded_checks(registry: Registry) -> Callable[[str], Callable[[Callable], Callable]]:
    """A ``check(target)`` decorator for ``registry`` whose checks run with one CPU thread: the tensors
    here are tiny, and on a busy grading machine a multi-threaded torch spends far longer
    synchronising threads than computing."""

    def check(target: str) -> Callable[[Callable], Callable]:
        def register(function: Callable) -> Callable:
            @functools.wraps(function)
            def single_threaded(implementation) -> None:
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    function(implementation)
                finally:
                    torch.set_num_threads(threads)

            return registry.check(target)(single_threaded)

        return register

    return check


TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}
DTYPES = (torch.float32, torch.float64)


def pair(result, what: str) -> tuple[Tensor, Tensor]:
    """The ``(output, log_det)`` pair a flow method must return."""
    assert isinstance(result, tuple) and len(result) == 2, (
        f"{what} should return a pair (output, log_det), got {type(result).__name__}")
    return result


def forward(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``layer(x)`` on a copy of ``x``: only the check of inputs left untouched sees in-place changes."""
    return pair(layer(x.clone()), "forward")


def inverse(layer: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    return pair(layer.inverse(z.clone()), "inverse")


def expect_flow_outputs_untouched_shapes_and_dtypes(layer: nn.Module, x: Tensor) -> None:
    """forward and inverse leave their inputs as they were and keep the input's shape and dtype."""
    batch, shape, dtype = x.shape[0], tuple(x.shape), x.dtype
    where = f"{dtype} input of shape {shape}"
    x_before = x.clone()
    z, log_det = pair(layer(x), "forward")
    expect_input_untouched(x, x_before, "forward")
    expect_tensor(f"z for {where}", z, shape, dtype)
    expect_tensor(f"log_det for {where}", log_det, (batch,), dtype)
    z_before = z.detach().clone()
    x_again, inverse_log_det = pair(layer.inverse(z), "inverse")
    expect_input_untouched(z, z_before, "inverse")
    expect_tensor(f"inverse output for {where}", x_again, shape, dtype)
    expect_tensor(f"inverse log_det for {where}", inverse_log_det, (batch,), dtype)


def expect_close(what: str, actual, expected: Tensor, tolerance: float = 1e-6) -> None:
    # A singular numerical Jacobian gives an expected log-det of -inf, which every finite value
    # would be "close" to under a relative tolerance: refuse it first.
    assert torch.isfinite(expected).all(), (
        f"{what}: expected a finite value, but the ground truth is {expected.flatten()[0].item():g} "
        "(the numerical Jacobian is singular: the map is not invertible sample by sample)")
    reference.assert_close(what, actual, expected, atol=tolerance, rtol=tolerance)


def expect_tensor(what: str, value, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    assert isinstance(value, Tensor), f"{what}: expected a torch.Tensor, got {type(value).__name__}"
    assert tuple(value.shape) == shape, f"{what}: expected shape {shape}, got {tuple(value.shape)}"
    assert value.dtype == dtype, f"{what}: expected dtype {dtype}, got {value.dtype}"


def randomise_parameters(layer: nn.Module, probe: Tensor, scale: float = 0.3) -> None:
    """Move every trainable parameter away from its starting value, whatever it is called, and make
    sure that this changes what ``layer`` does to ``probe``: a layer that ignores its parameters
    (an identity, say) would otherwise pass every consistency check.

    Non-zero entries are multiplied by ``exp(scale * noise)`` (so a scale stored directly keeps
    its sign and a triangular factor stays well conditioned); zero entries get ``scale * noise``.
    """
    z_before = forward(layer, probe)[0].detach()
    with torch.no_grad():
        for parameter in layer.parameters():
            if parameter.requires_grad:
                factor = torch.exp(scale * torch.randn_like(parameter))
                parameter.copy_(torch.where(parameter == 0, scale * torch.randn_like(parameter), parameter * factor))
    z_after = forward(layer, probe)[0].detach()
    assert isinstance(z_after, Tensor) and z_after.shape == z_before.shape, (
        f"forward: expected z of shape {tuple(probe.shape)}, got {getattr(z_after, 'shape', type(z_after).__name__)}")
    assert (z_after - z_before).abs().max().item() > 1e-3, (
        "moving every parameter of the layer to a random value left its output unchanged: forward must use "
        "the layer's parameters (nn.Parameter), and must not reset them on every call")


def expect_input_untouched(x: Tensor, x_before: Tensor, method: str) -> None:
    assert torch.equal(x, x_before), f"{method} changed its input in place; compute a new tensor instead"


def expect_samples_independent(layer: nn.Module, x: Tensor, tolerance: float) -> None:
    """Changing sample 1 of a batch (to ``3 x + 1``) leaves the other samples' outputs and log-dets unchanged."""
    changed = x.clone()
    changed[1] = 3 * changed[1] + 1
    reference.check_samples_independent(layer, x, changed, tolerance, tolerance, copy_inputs=True)


def expect_correct_parameter_gradients(layer: nn.Module, x: Tensor) -> None:
    """Autograd's gradient of a loss built from ``z`` and ``log_det`` against central differences
    in every entry of every trainable parameter (float64 ``layer`` and ``x``)."""
    named = [(name, p) for name, p in layer.named_parameters() if p.requires_grad]
    assert named, "the layer has no trainable parameters (nn.Parameter), so training cannot change it"
    z, log_det = forward(layer, x)
    z_weights = torch.randn_like(z)
    log_det_weights = torch.randn_like(log_det)

    def loss(z: Tensor, log_det: Tensor) -> Tensor:
        return (z * z_weights).sum() + (log_det * log_det_weights).sum()

    layer.zero_grad()
    value = loss(z, log_det)
    assert value.requires_grad, (
        "z and log_det: expected tensors that autograd can differentiate with respect to the parameters, got "
        "tensors that do not require grad: is the computation detached or run under torch.no_grad()?")
    value.backward()
    eps = 1e-6
    for name, parameter in named:
        autograd = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        numerical = torch.zeros_like(parameter)
        with torch.no_grad():
            # Entry by entry through indices, not a flat view: a parameter may be stored non-contiguous
            # (the Q of torch.linalg.qr is column-major), where view(-1) fails.
            for index in itertools.product(*(range(size) for size in parameter.shape)):
                original = parameter[index].item()
                parameter[index] = original + eps
                plus = loss(*forward(layer, x))
                parameter[index] = original - eps
                minus = loss(*forward(layer, x))
                parameter[index] = original
                numerical[index] = (plus - minus) / (2 * eps)
        expect_close(f"gradient of a loss of z and log_det with respect to parameter {name!r} "
                     "(autograd against central differences; is part of the computation detached?)",
                     autograd, numerical, 1e-5)


def refuse_modules(layer: nn.Module, reference_modules: tuple[type, ...]) -> None:
    """Refuse a layer built from any of ``reference_modules`` (course_pkg's own), even one made before the check."""
    for module in layer.modules():
        if isinstance(module, reference_modules):
            raise DelegationRefused(
                f"your layer contains course_pkg's {type(module).__name__}: the exercise asks you to write "
                "it yourself, without course_pkg's reference implementation")


def defined_in(*modules: ModuleType) -> list:
    """Every public class and function defined in ``modules``: the reference code a submission may not call.

    New reference code in those modules is refused without an edit of the checks that list them.
    """
    return [value for module in modules for name, value in vars(module).items()
            if not name.startswith("_") and callable(value) and getattr(value, "__module__", None) == module.__name__]


def module_classes(code: list) -> tuple[type, ...]:
    """The ``nn.Module`` classes in ``code``: what a layer may not contain (built before a check runs)."""
    return tuple(item for item in code if isinstance(item, type) and issubclass(item, nn.Module))
