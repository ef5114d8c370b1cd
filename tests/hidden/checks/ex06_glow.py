"""Hidden checks of ex06_glow (instructor-only).

Glow's step of flow on images is an invertible 1x1 convolution and an affine coupling whose
conditioner is a small convolutional network; RealNVP's squeeze trades space for channels between
the scales. The checks test what each layer promises rather than any way of writing it: the
squeeze is judged by where the numbers go (any arrangement of each 2x2 block into its 4 channels
is accepted, as long as each output pixel holds exactly the values of its own block and the
inverse puts them back); the 1x1 convolution's matrix is read off its outputs (never off a
parameter's name), so a plain ``[C, C]`` weight and a ``P L U`` parameterisation, rotations and
reflections, are all accepted; the coupling is judged by which channels pass unchanged and by the
structure of its numerical Jacobian, whichever half it keeps and whatever bounds its scale. Before
anything is compared every trainable parameter is moved to a random value (in float64): a new
coupling is the identity and an orthogonal matrix has ``W^T = W^-1``, and neither may pass by
being what it is at the start.
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
    expect_samples_independent,
    expect_tensor,
    forward,
    inverse,
    module_classes,
    randomise_parameters,
    refuse_modules,
    single_threaded_checks,
)
from course_grading.engine.grader import Registry
from course_pkg import models, nets
from course_pkg import testing as reference
from course_pkg.flows import Inverse, coupling, elementwise, glow, linear, multiscale, split_coupling, transformers

# Everything of course_pkg's image-flow code that a submission could hand the work to.
REFERENCE_CODE = defined_in(multiscale, linear, split_coupling, coupling, transformers, elementwise, glow, models, nets)
REFERENCE_MODULES = module_classes(REFERENCE_CODE)

REGISTRY = Registry()
REGISTRY.forbidden = {"Squeeze": REFERENCE_CODE, "InvConv1x1": REFERENCE_CODE, "GlowCoupling": REFERENCE_CODE}
check = single_threaded_checks(REGISTRY)

CHANNELS = (2, 4)  # of the images the checks build: [3, C, 4, 4]
IMAGE = (3, 4, 4)  # batch, height, width
HIDDEN = 4  # hidden_channels of the couplings the checks build: small, so finite differences stay cheap
CONDITION_LIMIT = 50.0  # a randomised 1x1 convolution's matrix must stay this well conditioned


# ------------------------------------------------------------------------------------- helpers


def image(channels: int, batch: int = IMAGE[0], height: int = IMAGE[1], width: int = IMAGE[2],
          dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(batch, channels, height, width, dtype=dtype)


def describe(x: Tensor) -> str:
    return f"{x.dtype} input of shape {tuple(x.shape)}"


def built(layer: nn.Module) -> nn.Module:
    """``layer``, refused if it holds one of course_pkg's reference modules (built before the check ran)."""
    refuse_modules(layer, REFERENCE_MODULES)
    return layer


# ---------------------------------------------------------------------------------------- Squeeze


def distinct_image(batch: int, channels: int, height: int, width: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Every entry a different number (a random order of 1, 2, 3, ...): where each value lands shows where it went."""
    count = batch * channels * height * width
    return (torch.randperm(count) + 1).to(dtype).view(batch, channels, height, width)


SQUEEZE_SHAPES = [(2, 1, 2, 2), (3, 2, 4, 6), (2, 3, 6, 4), (1, 4, 8, 2)]


def expect_squeezed(z: Tensor, x: Tensor) -> None:
    """``z`` is ``[B, 4C, H/2, W/2]`` and each of its pixels holds exactly the 4C values of its 2x2 block of ``x``."""
    batch, channels, height, width = tuple(x.shape)
    shape = (batch, 4 * channels, height // 2, width // 2)
    expect_tensor(f"z for {describe(x)}", z, shape, x.dtype)
    blocks = x.reshape(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    blocks = blocks.reshape(batch, height // 2, width // 2, 4 * channels).sort(dim=-1).values
    pixels = z.detach().permute(0, 2, 3, 1).sort(dim=-1).values
    wrong = (pixels != blocks).any(dim=-1).nonzero()
    if len(wrong):
        b, h, w = wrong[0].tolist()
        raise AssertionError(
            f"z[{b}, :, {h}, {w}] for {describe(x)} (every entry a different number): expected the {4 * channels} "
            f"values of the block x[{b}, :, {2 * h}:{2 * h + 2}, {2 * w}:{2 * w + 2}] in some order, got "
            f"{pixels[b, h, w].tolist()[:8]} (sorted; first 8) instead of {blocks[b, h, w].tolist()[:8]}: each "
            f"output pixel (h, w) takes the 4 pixels (2h + i, 2w + j) of every channel, nothing else "
            f"({len(wrong)} of {batch * (height // 2) * (width // 2)} output pixels wrong)")


def expect_zero_log_det(what: str, log_det, batch: int, dtype: torch.dtype) -> None:
    expect_tensor(what, log_det, (batch,), dtype)
    expect_close(f"{what} against 0 (a squeeze only moves numbers)", log_det, torch.zeros(batch, dtype=dtype), 0.0)


@check("Squeeze")
def squeeze_shape_and_block_locality(Squeeze) -> None:
    """forward maps [B, C, H, W] to [B, 4C, H/2, W/2], each output pixel (h, w) holding exactly the 4C values of input block (2h..2h+1, 2w..2w+1) in any order, with log_det zeros of shape [B]"""
    layer = built(Squeeze())
    for shape in SQUEEZE_SHAPES:
        x = distinct_image(*shape)
        z, log_det = forward(layer, x)
        expect_squeezed(z, x)
        expect_zero_log_det(f"log_det for {describe(x)}", log_det, shape[0], x.dtype)


@check("Squeeze")
def squeeze_inverse_undoes_forward(Squeeze) -> None:
    """inverse maps [B, 4C, H/2, W/2] back to [B, C, H, W]: inverse(forward(x)) = x and forward(inverse(z)) = z exactly, its log_det zeros of shape [B]"""
    layer = built(Squeeze())
    for shape in SQUEEZE_SHAPES:
        x = distinct_image(*shape)
        z, _ = forward(layer, x)
        x_again, log_det = inverse(layer, z)
        expect_tensor(f"inverse output for z of shape {tuple(z.shape)}", x_again, shape, x.dtype)
        expect_close(f"inverse(forward(x)) against x ({describe(x)})", x_again, x, 0.0)
        expect_zero_log_det(f"inverse log_det for z of shape {tuple(z.shape)}", log_det, shape[0], x.dtype)
        batch, channels, height, width = shape
        other = distinct_image(batch, 4 * channels, height // 2, width // 2)
        x_from_other, _ = inverse(layer, other)
        expect_close(f"forward(inverse(z)) against z (z of shape {tuple(other.shape)})",
                     forward(layer, x_from_other)[0], other, 0.0)


@check("Squeeze")
def squeeze_dtypes_untouched_inputs_and_independence(Squeeze) -> None:
    """float32 and float64 kept both ways, inputs not changed in place, each sample squeezed on its own"""
    layer = built(Squeeze())
    for dtype in DTYPES:
        for shape in [(3, 2, 4, 6), (2, 3, 6, 4), (2, 1, 2, 2)]:
            x = torch.randn(*shape, dtype=dtype)
            x_before = x.clone()
            z, log_det = layer(x)
            assert torch.equal(x, x_before), "forward changed its input in place; compute a new tensor instead"
            expect_tensor(f"log_det for {describe(x)}", log_det, (shape[0],), dtype)
            expect_tensor(f"z for {describe(x)}", z, (shape[0], 4 * shape[1], shape[2] // 2, shape[3] // 2), dtype)
            z_before = z.detach().clone()
            restored, inverse_log_det = layer.inverse(z)
            assert torch.equal(z, z_before), "inverse changed its input in place; compute a new tensor instead"
            expect_tensor(f"inverse output for {dtype} z of shape {tuple(z.shape)}", restored, shape, dtype)
            expect_tensor(f"inverse log_det for {dtype} z of shape {tuple(z.shape)}", inverse_log_det,
                          (shape[0],), dtype)
            expect_samples_independent(layer, x, 0.0)
            expect_samples_independent(Inverse(layer), z.detach(), 0.0)


# ------------------------------------------------------------------------------------- InvConv1x1


def read_matrix(layer: nn.Module, channels: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The ``[C, C]`` matrix of a 1x1 convolution, read off its outputs: column j is ``z(e_j) - z(0)``."""
    basis = torch.eye(channels, dtype=dtype).view(channels, channels, 1, 1)
    with torch.no_grad():
        columns = forward(layer, basis)[0]
        offset = forward(layer, torch.zeros(1, channels, 1, 1, dtype=dtype))[0]
    expect_tensor(f"z for a {dtype} input of shape {tuple(basis.shape)}", columns, tuple(basis.shape), dtype)
    return (columns - offset).reshape(channels, channels).T


def random_invconv(InvConv1x1, channels: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    """``InvConv1x1(channels)`` in ``dtype`` with every parameter moved to a random value, still invertible.

    The draw is repeated (at most 5 times) until the matrix is well conditioned: a random move can
    bring a plain weight close to a singular one, where no check could be precise.
    """
    for _ in range(5):
        layer = built(InvConv1x1(channels)).to(torch.float64)
        randomise_parameters(layer, image(channels), scale=0.3)
        matrix = read_matrix(layer, channels)
        if torch.linalg.cond(matrix).item() < CONDITION_LIMIT:
            return layer.to(dtype)
    raise AssertionError(f"InvConv1x1({channels}) with random parameters: expected an invertible matrix, got a "
                         f"condition number {torch.linalg.cond(matrix).item():.3g} in five draws")


@check("InvConv1x1")
def invconv_starts_orthogonal(InvConv1x1) -> None:
    """a new layer's matrix is a random orthogonal matrix: W W^T = I at construction, different from the identity and from one seed to another, C in {1, 2, 3, 5}; its log_det is 0"""
    for channels in (1, 2, 3, 5):
        matrices = []
        for seed in (0, 1, 2):
            torch.manual_seed(seed)
            layer = built(InvConv1x1(channels))
            matrix = read_matrix(layer.to(torch.float64), channels)
            expect_close(f"W W^T of a new InvConv1x1({channels}) (seed {seed}), W read off the outputs, against the "
                         "identity", matrix @ matrix.T, torch.eye(channels, dtype=torch.float64), 1e-5)
            _, log_det = forward(layer, image(channels))
            expect_close(f"log_det of a new InvConv1x1({channels}) against 0 (|det W| = 1)", log_det,
                         torch.zeros(IMAGE[0], dtype=torch.float64), 1e-5)
            matrices.append(matrix)
        if channels > 1:
            assert (matrices[0] - torch.eye(channels, dtype=torch.float64)).abs().max().item() > 1e-3, (
                f"a new InvConv1x1({channels}): expected a random orthogonal matrix, got the identity (a "
                "permutation of nothing): draw it, e.g. the Q of a QR decomposition of a Gaussian matrix")
            assert (matrices[0] - matrices[1]).abs().max().item() > 1e-3, (
                f"new InvConv1x1({channels}) layers made after torch.manual_seed(0) and torch.manual_seed(1): "
                "expected different random matrices, got the same one")


@check("InvConv1x1")
def invconv_log_det_matches_numerical_jacobian(InvConv1x1) -> None:
    """log_det equals log|det| of the numerical Jacobian (float64), random parameters, whichever sign det W has, [3, C, 4, 4] images, C in {2, 3, 4}"""
    for channels in (2, 3, 4):
        for _ in range(2):
            layer = random_invconv(InvConv1x1, channels)
            x = image(channels)
            reference.check_log_det(layer, x, what=f"log_det ({describe(x)})", copy_inputs=True)


@check("InvConv1x1")
def invconv_log_det_counts_every_pixel(InvConv1x1) -> None:
    """log_det = H * W * log|det W| at every image size (1x1, 2x3, 5x4, 8x8), W read off the outputs, random parameters"""
    for channels in (2, 3):
        layer = random_invconv(InvConv1x1, channels)
        expected_per_pixel = torch.linalg.slogdet(read_matrix(layer, channels)).logabsdet
        for height, width in [(1, 1), (2, 3), (5, 4), (8, 8)]:
            x = image(channels, 2, height, width)
            _, log_det = forward(layer, x)
            expect_tensor(f"log_det ({describe(x)})", log_det, (2,), torch.float64)
            expect_close(f"log_det ({describe(x)}) against H * W * log|det W| = {height} * {width} * "
                         f"{expected_per_pixel.item():.6g}", log_det,
                         (height * width * expected_per_pixel).expand(2), 1e-8)


@check("InvConv1x1")
def invconv_inverse_with_random_parameters(InvConv1x1) -> None:
    """inverse undoes forward both ways to 1e-8 in float64 with random parameters (not only orthogonal ones: W^-1, not W^T), its log_det minus the forward one"""
    for channels in CHANNELS:
        for _ in range(2):
            layer = random_invconv(InvConv1x1, channels)
            x = image(channels)
            reference.check_inverse(layer, x, 1e-8, 1e-8, copy_inputs=True)
            z = image(channels)
            x_from_z, _ = inverse(layer, z)
            expect_close(f"forward(inverse(z)) against z (z of shape {tuple(z.shape)})",
                         forward(layer, x_from_z)[0], z, 1e-8)


@check("InvConv1x1")
def invconv_shapes_dtypes_and_independence(InvConv1x1) -> None:
    """shapes and float32/float64 kept, inputs not changed in place, samples independent"""
    for dtype in DTYPES:
        for channels, height, width in [(1, 2, 2), (3, 4, 4), (4, 3, 5)]:
            layer = random_invconv(InvConv1x1, channels, dtype)
            x = image(channels, 5, height, width, dtype)
            expect_flow_outputs_untouched_shapes_and_dtypes(layer, x)
            expect_samples_independent(layer, x, TOLERANCE[dtype])


@check("InvConv1x1")
def invconv_gradients_reach_every_parameter(InvConv1x1) -> None:
    """gradients of z and log_det reach every parameter and match finite differences"""
    for channels in (2, 3):
        layer = random_invconv(InvConv1x1, channels)
        expect_correct_parameter_gradients(layer, image(channels, 2, 3, 3))


# ------------------------------------------------------------------------------------ GlowCoupling


def new_coupling(GlowCoupling, channels: int, hidden_channels: int = HIDDEN) -> nn.Module:
    return built(GlowCoupling(channels, hidden_channels))


def random_coupling(GlowCoupling, channels: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    """``GlowCoupling(channels, 4)`` in ``dtype`` with every trainable parameter randomised."""
    layer = new_coupling(GlowCoupling, channels).to(dtype)
    randomise_parameters(layer, image(channels, dtype=dtype), scale=0.5)
    return layer


def kept_channels(layer: nn.Module, x: Tensor) -> list[int]:
    """The channels that ``forward`` leaves exactly as they went in."""
    z, _ = forward(layer, x)
    return [c for c in range(x.shape[1]) if torch.equal(z[:, c].detach(), x[:, c])]


@check("GlowCoupling")
def glow_coupling_starts_as_the_identity(GlowCoupling) -> None:
    """a new layer is exactly the identity (z == x, log_det == 0, both ways: the last convolution starts at zero), and stops being one once its parameters move, C in {2, 4}"""
    for channels in CHANNELS:
        layer = new_coupling(GlowCoupling, channels).to(torch.float64)
        x = image(channels)
        for method, run in [("forward", forward), ("inverse", inverse)]:
            output, log_det = run(layer, x)
            expect_tensor(f"{method} output of a new GlowCoupling({channels}, {HIDDEN})", output, tuple(x.shape),
                          x.dtype)
            expect_tensor(f"{method} log_det of a new GlowCoupling({channels}, {HIDDEN})", log_det, (x.shape[0],),
                          x.dtype)
            expect_close(f"{method} output of a new GlowCoupling({channels}, {HIDDEN}) against its input (start the "
                         "conditioner's last convolution at zero, weight and bias)", output, x, 1e-12)
            expect_close(f"{method} log_det of a new GlowCoupling({channels}, {HIDDEN}) against 0", log_det,
                         torch.zeros(x.shape[0], dtype=x.dtype), 1e-12)
        randomise_parameters(layer, x)


@check("GlowCoupling")
def glow_coupling_log_det_matches_numerical_jacobian(GlowCoupling) -> None:
    """log_det equals log|det| of the numerical Jacobian (float64), random parameters, [3, C, 4, 4] images, C in {2, 4}"""
    for channels in CHANNELS:
        layer = random_coupling(GlowCoupling, channels)
        x = image(channels)
        reference.check_log_det(layer, x, what=f"log_det ({describe(x)})", copy_inputs=True)


@check("GlowCoupling")
def glow_coupling_inverse_and_its_log_det(GlowCoupling) -> None:
    """inverse undoes forward both ways to 1e-8 in float64, and its log_det, minus the forward one, matches the inverse's numerical Jacobian"""
    for channels in CHANNELS:
        layer = random_coupling(GlowCoupling, channels)
        x = image(channels)
        reference.check_inverse(layer, x, 1e-8, 1e-8, copy_inputs=True)
        z = 2 * image(channels)
        x_from_z, _ = inverse(layer, z)
        expect_close(f"forward(inverse(z)) against z (z of shape {tuple(z.shape)})", forward(layer, x_from_z)[0], z,
                     1e-8)
        reference.check_log_det(Inverse(layer), z, what=f"inverse log_det (z of shape {tuple(z.shape)})",
                                copy_inputs=True)


@check("GlowCoupling")
def glow_coupling_keeps_one_half_and_is_triangular(GlowCoupling) -> None:
    """exactly C/2 channels (either half) pass unchanged both ways; each other entry depends on itself, by a positive scale set per sample, and on the kept half, never on another transformed entry"""
    for channels in CHANNELS:
        layer = random_coupling(GlowCoupling, channels)
        x = image(channels)
        kept = kept_channels(layer, x)
        assert len(kept) == channels // 2, (
            f"GlowCoupling({channels}, {HIDDEN}) with random parameters: expected {channels // 2} of the {channels} "
            f"channels to pass unchanged, got {len(kept)} (channels {kept}): transform one half, conditioned on the other")
        other = [c for c in range(channels) if c not in kept]
        x_from_x, _ = inverse(layer, x)
        expect_close(f"inverse output in the channels {kept} that forward keeps, against its input there",
                     x_from_x[:, kept], x[:, kept], 1e-12)

        batch, _, height, width = tuple(x.shape)
        jacobian = reference.numerical_batch_jacobian(lambda v: forward(layer, v)[0], x)
        jacobian = jacobian.view(batch, channels, height * width, channels, height * width)
        block = jacobian[:, other][:, :, :, other].reshape(batch, len(other) * height * width, -1)
        diagonal = torch.diagonal(block, dim1=1, dim2=2)
        expect_close("off-diagonal entries of dz/dx among the transformed channels against 0 (each transformed entry "
                     "may depend on itself and on the kept half, not on another transformed entry)",
                     block - torch.diag_embed(diagonal), torch.zeros_like(block), 1e-6)
        assert (diagonal > 0).all(), (
            f"diagonal of dz/dx for the transformed channels: expected positive scales, got {diagonal.min().item():.4g}")
        assert (diagonal - 1).abs().max().item() > 1e-3, (
            "diagonal of dz/dx for the transformed channels: expected scales other than 1 with random parameters, "
            "got 1 everywhere: the scale must come from the network")
        assert (diagonal - diagonal[0]).abs().max().item() > 1e-3, (
            "diagonal of dz/dx for the transformed channels: expected scales that differ between samples, got the "
            "same for every sample: compute them from each sample's kept half")
        coupling_block = jacobian[:, other][:, :, :, kept]
        assert coupling_block.abs().max().item() > 1e-3, (
            "dz/dx of the transformed channels with respect to the kept ones: expected non-zero entries with random "
            "parameters, got zeros: the scale and shift must be computed by the network from the kept half")


@check("GlowCoupling")
def glow_coupling_shapes_dtypes_independence_and_width(GlowCoupling) -> None:
    """shapes and float32/float64 kept, inputs not changed in place, samples independent, hidden_channels sets the conditioner's width"""
    name = GlowCoupling.__name__ if isinstance(GlowCoupling, type) else "the class"

    def parameter_count(hidden_channels: int) -> int:
        layer = built(GlowCoupling(channels=4, hidden_channels=hidden_channels))
        return sum(p.numel() for p in layer.parameters() if p.requires_grad)

    narrow, wide = parameter_count(2), parameter_count(16)
    assert wide > narrow, (
        f"{name}(channels, hidden_channels): expected more trainable parameters with hidden_channels=16 than with 2, "
        f"got {wide} and {narrow}: hidden_channels sets the width of the conditioner's hidden convolutions")
    for dtype in DTYPES:
        for channels in CHANNELS:
            for batch in (1, 5):
                layer = random_coupling(GlowCoupling, channels, dtype)
                x = image(channels, batch, 4, 6, dtype)
                expect_flow_outputs_untouched_shapes_and_dtypes(layer, x)
                if batch > 1:
                    expect_samples_independent(layer, x, TOLERANCE[dtype])


@check("GlowCoupling")
def glow_coupling_gradients_reach_every_parameter(GlowCoupling) -> None:
    """gradients of z and log_det reach every parameter and match finite differences"""
    layer = random_coupling(GlowCoupling, 2)
    expect_correct_parameter_gradients(layer, image(2, 2, 3, 3))
