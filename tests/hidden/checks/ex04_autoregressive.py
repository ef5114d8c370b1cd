"""Hidden checks of ex04_autoregressive (instructor-only).

An autoregressive layer promises a structure, and the checks test that structure rather than any
way of writing it: in the natural order (feature 0 first), the Jacobian ``dz/dx`` of a MAF layer is
lower triangular with the positive scales ``exp(-alpha_i)`` on its diagonal, each set by the
features before ``i`` only, and the log-determinant, from central differences in float64, is what
``forward`` reports. The direction that the layer computes in one pass (MAF's ``forward``, IAF's
``inverse``) must run the conditioner once: that is counted with forward hooks on the layer's
submodules, never timed. Before anything is compared every trainable parameter is moved to a
random value (a new layer whose last masked layer starts at zero is the identity, and must not
pass by being one). The checks never assume how a student assigns the hidden degrees, sizes the
network or names its parts, except ``MaskedLinear``'s ``weight``, ``bias`` and ``mask``, which the
task names.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from course_grading.engine.expectations import (
    DTYPES,
    TOLERANCE,
    defined_in,
    expect_close,
    expect_correct_parameter_gradients,
    expect_flow_outputs_untouched_shapes_and_dtypes,
    expect_input_untouched,
    expect_samples_independent,
    expect_tensor,
    forward,
    inverse,
    module_classes,
    randomise_parameters,
    refuse_modules,
    single_threaded_checks,
)
from course_pkg import nets
from course_pkg import testing as reference
from course_pkg.flows import Inverse, autoregressive, coupling, split_coupling, transformers
from course_grading.engine.grader import Registry


# ------------------------------------------------------------------- what a submission may not use
# Every public class and function defined in these modules of course_pkg (MADE, MaskedAutoregressive,
# the transformers, the couplings, the networks), and the classes among them as submodules.
REFERENCE_CODE = defined_in(autoregressive, coupling, split_coupling, transformers, nets)
REFERENCE_MODULES = module_classes(REFERENCE_CODE)

REGISTRY = Registry()
REGISTRY.forbidden = {
    "MaskedLinear": REFERENCE_CODE,
    "MAFLayer": REFERENCE_CODE,
    "IAFLayer": REFERENCE_CODE,
}
check = single_threaded_checks(REGISTRY)

SCALE_BOUND = 10.0  # the task asks for |alpha_i| <= 10 whatever the parameters
HUGE = 1000.0  # the factor on every parameter in the check of that promise
SIZES = (1, 2, 3, 5)  # features of the layers the checks build


# ------------------------------------------------------------------------------------- helpers


def refuse_reference_modules(layer: nn.Module) -> None:
    refuse_modules(layer, REFERENCE_MODULES)


def autoregressive_layer(Layer, features: int, hidden_features: int = 8, dtype: torch.dtype = torch.float64,
                         scale: float = 0.5) -> nn.Module:
    """``Layer(features, hidden_features)`` in ``dtype``, with every trainable parameter randomised."""
    layer = Layer(features, hidden_features)
    refuse_reference_modules(layer)
    layer = layer.to(dtype)
    randomise_parameters(layer, torch.randn(5, features, dtype=dtype), scale)
    return layer


class PassCounter:
    """Counts, with forward hooks, how often each submodule of ``layer`` that holds parameters runs."""

    def __init__(self, layer: nn.Module) -> None:
        self.modules = [(name, module) for name, module in layer.named_modules()
                        if module is not layer and any(True for _ in module.parameters(recurse=False))]
        self.counts: dict[str, int] = {}

    def run(self, method, v: Tensor):
        self.counts = {name: 0 for name, _ in self.modules}
        handles = [module.register_forward_hook(self._hook(name)) for name, module in self.modules]
        try:
            return method(v.clone())
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str):
        def count(module, inputs, output) -> None:
            self.counts[name] += 1
        return count

    @property
    def most(self) -> tuple[str, int]:
        return max(self.counts.items(), key=lambda item: item[1], default=("", 0))


def expect_finite(what: str, value) -> None:
    assert isinstance(value, Tensor), f"{what}: expected a torch.Tensor, got {type(value).__name__}"
    bad = int((~torch.isfinite(value)).sum())
    assert bad == 0, (
        f"{what}: expected finite values, got {bad} NaN or inf entries: exp(alpha) overflows unless alpha is "
        f"bounded (|alpha_i| <= {SCALE_BOUND:g} whatever the parameters)")


def jacobian(f, x: Tensor) -> Tensor:
    return reference.numerical_batch_jacobian(f, x)  # [B, D, D]


def expect_lower_triangular(what: str, jac: Tensor) -> None:
    features = jac.shape[-1]
    upper = torch.triu(torch.ones(features, features, dtype=torch.bool), diagonal=1)
    worst = jac[:, upper].abs().max().item() if features > 1 else 0.0
    if worst > 1e-6:
        entries = (jac.abs() > 1e-6) & upper
        b, i, j = entries.nonzero()[0].tolist()
        raise AssertionError(
            f"{what}: expected 0 above the diagonal (output {i} may depend on features 0..{i} only, in the natural "
            f"order), got d_{i}/d_{j} = {jac[b, i, j].item():.4g}: check the MADE degrees and masks")


def expect_diagonal_set_by_earlier_features(what: str, f, x: Tensor, expected_sign: str) -> None:
    """The diagonal is positive, differs from 1 and between samples, and does not change when the
    feature itself changes (``z_i`` is affine in ``x_i`` with a scale set by ``x_<i``)."""
    jac = jacobian(f, x)
    diagonal = torch.diagonal(jac, dim1=1, dim2=2)
    features = x.shape[1]
    assert (diagonal > 0).all(), (
        f"{what}: expected the scales exp({expected_sign}alpha_i) > 0 on the diagonal, got {diagonal.min().item():.4g}")
    assert (diagonal - 1).abs().max().item() > 1e-3, (
        f"{what}: expected diagonal entries exp({expected_sign}alpha_i) other than 1 with random parameters, got 1 "
        "everywhere: alpha must come from the conditioner")
    for i in range(features):
        moved = x.clone()
        moved[:, i] = moved[:, i] + 0.7
        moved_diagonal = torch.diagonal(jacobian(f, moved), dim1=1, dim2=2)
        expect_close(f"{what}: entry ({i}, {i}) of the diagonal after changing feature {i} only, against its value "
                     f"before (exp({expected_sign}alpha_{i}) depends on the features before {i}, not on feature {i})",
                     moved_diagonal[:, i], diagonal[:, i], 1e-6)
    if features > 1:
        assert (diagonal[:, 1:] - diagonal[:1, 1:]).abs().max().item() > 1e-3, (
            f"{what}: expected scales exp({expected_sign}alpha_i), i >= 1, that differ between samples, got the same "
            "for every sample: alpha_i must be computed from each sample's earlier features")
        lower = torch.tril(torch.ones(features, features, dtype=torch.bool), diagonal=-1)
        assert jac[:, lower].abs().max().item() > 1e-3, (
            f"{what}: expected non-zero entries below the diagonal with random parameters, got zeros: mu_i and alpha_i "
            "must be computed by the conditioner from the earlier features")


def expect_log_det_matches_numerical_jacobian(Layer, method: str) -> None:
    for features in SIZES:
        layer = autoregressive_layer(Layer, features)
        x = torch.randn(4, features, dtype=torch.float64)
        reference.check_log_det(layer if method == "forward" else Inverse(layer), x,
                                what=f"{method} log_det ({features} features)", copy_inputs=True)


def expect_inverse_and_its_log_det(Layer) -> None:
    for features in SIZES:
        layer = autoregressive_layer(Layer, features)
        x = torch.randn(6, features, dtype=torch.float64)
        reference.check_inverse(layer, x, 1e-6, 1e-6, copy_inputs=True)
        z = 2 * torch.randn(6, features, dtype=torch.float64)
        x_from_z, _ = inverse(layer, z)
        expect_close(f"forward(inverse(z)) against z ({features} features)", forward(layer, x_from_z)[0], z, 1e-6)
        reference.check_log_det(Inverse(layer), z, what=f"inverse log_det ({features} features)", copy_inputs=True)


def expect_conditioner_passes(Layer, one_pass: str) -> None:
    """The one-pass direction runs each parameter-holding submodule exactly once (and some run); the
    sequential direction at most ``features + 1`` times."""
    sequential = "inverse" if one_pass == "forward" else "forward"
    for features in (1, 3, 6):
        layer = autoregressive_layer(Layer, features)
        counter = PassCounter(layer)
        assert counter.modules, (
            "the layer has no submodules holding parameters: build the conditioner from modules (MaskedLinear "
            "layers in an nn.Sequential, say) so that its passes can be counted")
        x = torch.randn(5, features, dtype=torch.float64)
        pair = counter.run(getattr(layer, one_pass), x)
        assert isinstance(pair, tuple) and len(pair) == 2, f"{one_pass} should return a pair (output, log_det)"
        name, most = counter.most
        assert most >= 1, (
            f"{one_pass} ({features} features): expected the conditioner to run once, got no call of any submodule "
            "holding parameters: call your modules (module(x)), not their .forward or their weights directly")
        assert most == 1, (
            f"{one_pass} ({features} features): expected one pass of the conditioner for all features at once, got "
            f"{most} calls of submodule {name!r}: the masks make one pass give every mu_i and alpha_i")
        counter.run(getattr(layer, sequential), x)
        name, most = counter.most
        assert most <= features + 1, (
            f"{sequential} ({features} features): expected at most {features + 1} passes of the conditioner, got "
            f"{most} calls of submodule {name!r}")


def expect_shapes_dtypes_and_independence(Layer) -> None:
    name = Layer.__name__ if isinstance(Layer, type) else "the class"
    by_keyword = Layer(features=3, hidden_features=4)
    refuse_reference_modules(by_keyword)

    def parameter_count(hidden_features: int) -> int:
        return sum(p.numel() for p in Layer(4, hidden_features).parameters() if p.requires_grad)

    narrow, wide = parameter_count(3), parameter_count(16)
    assert wide > narrow, (
        f"{name}(features, hidden_features): expected more trainable parameters with hidden_features=16 than with "
        f"3, got {wide} and {narrow}: hidden_features sets the width of the conditioner's hidden layers")
    for dtype in DTYPES:
        for features in (1, 4):
            for batch in (1, 7):
                layer = autoregressive_layer(Layer, features, dtype=dtype)
                x = torch.randn(batch, features, dtype=dtype)
                expect_flow_outputs_untouched_shapes_and_dtypes(layer, x)
                if batch > 1:
                    expect_samples_independent(layer, x, TOLERANCE[dtype])
                    expect_samples_independent(Inverse(layer), x, TOLERANCE[dtype])


def expect_gradients(Layer) -> None:
    for features in (1, 3):
        layer = autoregressive_layer(Layer, features, hidden_features=4)
        x = torch.randn(3, features, dtype=torch.float64)
        expect_correct_parameter_gradients(layer, x)
        expect_correct_parameter_gradients(Inverse(layer), x)


def expect_bounded_log_scale(Layer, method: str) -> None:
    run = forward if method == "forward" else inverse
    for features in (1, 3, 5):
        bound = SCALE_BOUND * features
        for dtype in DTYPES:
            layer = autoregressive_layer(Layer, features, dtype=dtype)
            with torch.no_grad():
                for parameter in layer.parameters():
                    if parameter.requires_grad:
                        parameter.mul_(HUGE)
            where = f"every parameter multiplied by {HUGE:g}, {features} features, {dtype}"
            output, log_det = run(layer, 2 * torch.randn(16, features, dtype=dtype))
            expect_finite(f"{method} output ({where})", output)
            expect_finite(f"{method} log_det ({where})", log_det)
            largest = log_det.abs().max().item()
            assert largest <= bound * (1 + 1e-5), (
                f"{method} log_det ({where}): expected |log_det| <= {bound:g} (|alpha_i| <= {SCALE_BOUND:g} on each "
                f"of {features} features), got {largest:.4g}: bound alpha by a fixed constant")


# -------------------------------------------------------------------------------- MaskedLinear


def random_mask(out_features: int, in_features: int, generator: torch.Generator) -> Tensor:
    """A float32 mask of 0.0 and 1.0 with some of each (when it has two entries or more)."""
    while True:
        mask = (torch.rand(out_features, in_features, generator=generator) < 0.5).float()
        if mask.numel() < 2 or 0 < mask.sum() < mask.numel():
            return mask


MASKED_SIZES = [(1, 1), (3, 4), (4, 3), (5, 5), (2, 7)]


def masked_layer(MaskedLinear, in_features: int, out_features: int, mask: Tensor,
                 dtype: torch.dtype = torch.float64) -> nn.Module:
    """``MaskedLinear(in_features, out_features, mask)`` in ``dtype`` with random ``weight`` and ``bias``."""
    layer = MaskedLinear(in_features, out_features, mask.clone())
    refuse_reference_modules(layer)
    layer = layer.to(dtype)
    for name, shape in [("weight", (out_features, in_features)), ("bias", (out_features,))]:
        value = getattr(layer, name, None)
        assert isinstance(value, nn.Parameter), (
            f"MaskedLinear: expected a trainable parameter {name!r} of shape {shape} (as in nn.Linear), got "
            f"{type(value).__name__}")
        assert tuple(value.shape) == shape, f"MaskedLinear: expected {name} of shape {shape}, got {tuple(value.shape)}"
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_features, in_features, dtype=dtype))
        layer.bias.copy_(torch.randn(out_features, dtype=dtype))
    return layer


def masked_call(layer: nn.Module, x: Tensor) -> Tensor:
    y = layer(x.clone())
    assert isinstance(y, Tensor), f"MaskedLinear's forward: expected a torch.Tensor, got {type(y).__name__}"
    return y


def describe_mask(mask: Tensor) -> str:
    return f"mask {mask.int().tolist()}"


@check("MaskedLinear")
def masked_linear_output(MaskedLinear) -> None:
    """the output equals x @ (weight * mask).T + bias for random weights, biases and masks, several sizes"""
    generator = torch.Generator().manual_seed(4)
    for in_features, out_features in MASKED_SIZES:
        for _ in range(2):
            mask = random_mask(out_features, in_features, generator)
            layer = masked_layer(MaskedLinear, in_features, out_features, mask)
            x = torch.randn(6, in_features, dtype=torch.float64)
            expected = x @ (layer.weight.detach() * mask.double()).T + layer.bias.detach()
            expect_close(f"MaskedLinear({in_features}, {out_features}, {describe_mask(mask)}) output against "
                         "x @ (weight * mask).T + bias", masked_call(layer, x), expected, 1e-10)


@check("MaskedLinear")
def masked_linear_masked_weights_unused(MaskedLinear) -> None:
    """weights where mask == 0 have no effect and get zero gradient; the others get the gradient of the output"""
    generator = torch.Generator().manual_seed(5)
    for in_features, out_features in MASKED_SIZES[1:]:
        mask = random_mask(out_features, in_features, generator)
        layer = masked_layer(MaskedLinear, in_features, out_features, mask)
        where = f"MaskedLinear({in_features}, {out_features}, {describe_mask(mask)})"
        x = torch.randn(5, in_features, dtype=torch.float64)
        before = masked_call(layer, x).detach()
        with torch.no_grad():
            layer.weight.add_(100 * (1 - mask.double()) * torch.randn_like(layer.weight))
        expect_close(f"{where}: output after changing the weights where mask == 0, against the output before "
                     "(those weights must have no effect)", masked_call(layer, x).detach(), before, 1e-10)
        weights = torch.randn(5, out_features, dtype=torch.float64)
        layer.zero_grad()
        output = masked_call(layer, x)
        assert output.requires_grad, (
            f"{where}: expected an output that autograd can differentiate with respect to weight and bias, got one "
            "that does not require grad")
        (output * weights).sum().backward()
        gradient = layer.weight.grad if layer.weight.grad is not None else torch.zeros_like(layer.weight)
        expect_close(f"{where}: gradient of a weighted sum of the output with respect to weight, against "
                     "(upstream.T @ x) * mask (zero where mask == 0)", gradient, (weights.T @ x) * mask.double(), 1e-10)
        bias_gradient = layer.bias.grad if layer.bias.grad is not None else torch.zeros_like(layer.bias)
        expect_close(f"{where}: gradient with respect to bias", bias_gradient, weights.sum(dim=0), 1e-10)


@check("MaskedLinear")
def masked_linear_mask_is_a_buffer(MaskedLinear) -> None:
    """the mask is a buffer named mask, not a parameter: it follows .to(torch.float64) and only weight and bias are trained"""
    generator = torch.Generator().manual_seed(6)
    for in_features, out_features in MASKED_SIZES[1:]:
        mask = random_mask(out_features, in_features, generator)
        layer = MaskedLinear(in_features, out_features, mask.clone())
        refuse_reference_modules(layer)
        where = f"MaskedLinear({in_features}, {out_features}, {describe_mask(mask)})"
        buffers = dict(layer.named_buffers())
        assert "mask" not in dict(layer.named_parameters()), (
            f"{where}: expected the mask as a buffer (self.register_buffer('mask', ...)), got a parameter named "
            "'mask': a parameter is trained, and training would move the mask off 0 and 1")
        assert "mask" in buffers, (
            f"{where}: expected a buffer named 'mask' (self.register_buffer('mask', ...)), got buffers "
            f"{sorted(buffers)}: a plain attribute does not follow layer.to(...) and is not saved with the layer")
        assert torch.equal(buffers["mask"].detach().double(), mask.double()), (
            f"{where}: expected the buffer 'mask' to hold the mask it was given, got {buffers['mask'].tolist()}")
        trained = sorted(name for name, p in layer.named_parameters() if p.requires_grad)
        assert trained == ["bias", "weight"], (
            f"{where}: expected the trainable parameters ['bias', 'weight'], got {trained}: the mask is fixed")
        layer = layer.to(torch.float64)
        moved = dict(layer.named_buffers())["mask"]
        assert moved.dtype == torch.float64, (
            f"{where}: after layer.to(torch.float64), expected the mask buffer in float64, got {moved.dtype}")


@check("MaskedLinear")
def masked_linear_shapes_and_dtypes(MaskedLinear) -> None:
    """output [B, out_features] of the input's dtype, float32 and float64, input not changed in place"""
    generator = torch.Generator().manual_seed(7)
    by_keyword = MaskedLinear(in_features=3, out_features=2, mask=torch.ones(2, 3))
    refuse_reference_modules(by_keyword)
    for dtype in DTYPES:
        for in_features, out_features in MASKED_SIZES:
            mask = random_mask(out_features, in_features, generator)
            layer = masked_layer(MaskedLinear, in_features, out_features, mask, dtype)
            for batch in (1, 6):
                x = torch.randn(batch, in_features, dtype=dtype)
                x_before = x.clone()
                y = layer(x)
                expect_input_untouched(x, x_before, "MaskedLinear's forward")
                expect_tensor(f"MaskedLinear({in_features}, {out_features}, ...) output for a {dtype} input of shape "
                              f"{tuple(x.shape)}", y, (batch, out_features), dtype)


# ------------------------------------------------------------------------------------ MAFLayer


@check("MAFLayer")
def maf_log_det_matches_numerical_jacobian(MAFLayer) -> None:
    """log_det (minus the sum of alpha) equals log|det| of the numerical Jacobian in float64, random parameters, several sizes"""
    expect_log_det_matches_numerical_jacobian(MAFLayer, "forward")


@check("MAFLayer")
def maf_jacobian_is_triangular(MAFLayer) -> None:
    """dz/dx is lower triangular (dz_i/dx_j = 0 for j > i), its diagonal exp(-alpha_i) set by x_<i per sample"""
    for features in (2, 3, 5):
        layer = autoregressive_layer(MAFLayer, features)
        x = torch.randn(5, features, dtype=torch.float64)
        f = lambda v: forward(layer, v)[0]  # noqa: E731
        expect_lower_triangular(f"numerical Jacobian dz/dx ({features} features)", jacobian(f, x))
        expect_diagonal_set_by_earlier_features(f"numerical Jacobian dz/dx ({features} features)", f, x, "-")


@check("MAFLayer")
def maf_inverse_and_its_log_det(MAFLayer) -> None:
    """inverse undoes forward both ways to 1e-6 in float64, and its log_det matches the inverse's numerical Jacobian"""
    expect_inverse_and_its_log_det(MAFLayer)


@check("MAFLayer")
def maf_forward_runs_the_conditioner_once(MAFLayer) -> None:
    """forward runs the conditioner once per call (each submodule holding parameters once), inverse at most features + 1 times"""
    expect_conditioner_passes(MAFLayer, "forward")


@check("MAFLayer")
def maf_shapes_dtypes_and_independence(MAFLayer) -> None:
    """shapes and float32/float64 kept, inputs not changed in place, samples independent, hidden_features used"""
    expect_shapes_dtypes_and_independence(MAFLayer)


@check("MAFLayer")
def maf_gradients_reach_every_parameter(MAFLayer) -> None:
    """gradients of the outputs and log_det of forward and inverse reach every parameter and match finite differences"""
    expect_gradients(MAFLayer)


@check("MAFLayer")
def maf_log_scale_is_bounded(MAFLayer) -> None:
    """alpha is bounded: with every parameter multiplied by 1000, forward's outputs stay finite and |alpha_i| <= 10"""
    expect_bounded_log_scale(MAFLayer, "forward")


# ------------------------------------------------------------------------------------ IAFLayer


@check("IAFLayer")
def iaf_log_det_matches_numerical_jacobian(IAFLayer) -> None:
    """inverse's log_det (the sum of alpha) equals log|det| of the numerical Jacobian in float64, random parameters, several sizes"""
    expect_log_det_matches_numerical_jacobian(IAFLayer, "inverse")


@check("IAFLayer")
def iaf_jacobian_is_triangular(IAFLayer) -> None:
    """dx/dz and dz/dx are lower triangular, the diagonal of dx/dz exp(alpha_i) set by z_<i per sample"""
    for features in (2, 3, 5):
        layer = autoregressive_layer(IAFLayer, features)
        z = torch.randn(5, features, dtype=torch.float64)
        f = lambda v: inverse(layer, v)[0]  # noqa: E731
        expect_lower_triangular(f"numerical Jacobian dx/dz of inverse ({features} features)", jacobian(f, z))
        expect_diagonal_set_by_earlier_features(f"numerical Jacobian dx/dz of inverse ({features} features)", f, z, "")
        expect_lower_triangular(f"numerical Jacobian dz/dx of forward ({features} features)",
                                jacobian(lambda v: forward(layer, v)[0], z))


@check("IAFLayer")
def iaf_inverse_and_its_log_det(IAFLayer) -> None:
    """forward undoes inverse both ways to 1e-6 in float64, and forward's log_det matches its numerical Jacobian"""
    for features in SIZES:
        layer = autoregressive_layer(IAFLayer, features)
        z = torch.randn(6, features, dtype=torch.float64)
        reference.check_inverse(Inverse(layer), z, 1e-6, 1e-6, copy_inputs=True)
        x = 2 * torch.randn(6, features, dtype=torch.float64)
        z_from_x, _ = forward(layer, x)
        expect_close(f"inverse(forward(x)) against x ({features} features)", inverse(layer, z_from_x)[0], x, 1e-6)
        reference.check_log_det(layer, x, what=f"forward log_det ({features} features)", copy_inputs=True)


@check("IAFLayer")
def iaf_inverse_runs_the_conditioner_once(IAFLayer) -> None:
    """inverse runs the conditioner once per call (each submodule holding parameters once), forward at most features + 1 times"""
    expect_conditioner_passes(IAFLayer, "inverse")


@check("IAFLayer")
def iaf_shapes_dtypes_and_independence(IAFLayer) -> None:
    """shapes and float32/float64 kept, inputs not changed in place, samples independent, hidden_features used"""
    expect_shapes_dtypes_and_independence(IAFLayer)


@check("IAFLayer")
def iaf_gradients_reach_every_parameter(IAFLayer) -> None:
    """gradients of the outputs and log_det of forward and inverse reach every parameter and match finite differences"""
    expect_gradients(IAFLayer)


@check("IAFLayer")
def iaf_log_scale_is_bounded(IAFLayer) -> None:
    """alpha is bounded: with every parameter multiplied by 1000, inverse's outputs stay finite and |alpha_i| <= 10"""
    expect_bounded_log_scale(IAFLayer, "inverse")
