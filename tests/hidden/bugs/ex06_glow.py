"""Deliberately wrong solutions of ex06, each with the checks it must fail (instructor-only).

The tests grade each one and require that it loses exactly these checks' points: a bug that
slips through, or one that costs the points of an unrelated check, fails the suite. Each source
defines its whole class. They are written in other ways than the notebook's solution, so the
checks are seen to accept those: the squeeze in the channel order ``c + C (2 i + j)``, the 1x1
convolution with Glow's LU parameterisation as well as a plain weight, the coupling keeping the
second half, with Glow's sigmoid scale (divided by ``sigmoid(2)``, so a new layer is the identity)
or an unbounded ``exp``, and ReLU in its network.
"""

from course_grading.bugs import Bug


def _fill(template: str, reference: dict[str, str], changes: dict[str, str]) -> str:
    """``template`` with its placeholders filled, and those that the filled-in text brings along."""
    values = {**reference, **changes}
    filled = template.format(**values)
    return filled.format(**values) if "{" in filled else filled


# Each target is written once with placeholders; a bug is the reference with one or two of them changed.
_SQUEEZE = '''
class Squeeze(nn.Module):
    def forward(self, x):
        batch, channels, height, width = x.shape
        blocks = x.reshape(batch, channels, height // 2, 2, width // 2, 2)
        z = {squeezed}
        return z, {log_det}

    def inverse(self, z):
        batch, channels, height, width = z.shape
        blocks = z.reshape(batch, 2, 2, channels // 4, height, width)
        x = {unsqueezed}
        return x, z.new_zeros(batch)
'''
_SQUEEZE_REFERENCE = dict(
    # channel (2 i + j) C + c: the block position first, the input channel second
    squeezed="blocks.permute(0, 3, 5, 1, 2, 4).reshape(batch, 4 * channels, height // 2, width // 2)",
    log_det="x.new_zeros(batch)",
    unsqueezed="blocks.permute(0, 3, 4, 1, 5, 2).reshape(batch, channels // 4, 2 * height, 2 * width)",
)


def _squeeze(**changes: str) -> str:
    return _fill(_SQUEEZE, _SQUEEZE_REFERENCE, changes)


_PLAIN_CONV = '''
class InvConv1x1(nn.Module):
    def __init__(self, channels):
        super().__init__()
        {init}

    def forward(self, x):
        batch, _, height, width = x.shape
        z = torch.einsum("ij,bjhw->bihw", self.weight, x)
        return z, {log_det} * x.new_ones(batch)

    def inverse(self, z):
        batch, _, height, width = z.shape
        columns = z.permute(1, 0, 2, 3).reshape(z.shape[1], -1)
        x = {solve}.reshape(z.shape[1], batch, height, width).permute(1, 0, 2, 3)
        return x, -{log_det} * z.new_ones(batch)
'''
_PLAIN_CONV_REFERENCE = dict(
    init="self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])",
    log_det="height * width * torch.linalg.slogdet(self.weight).logabsdet",
    solve="torch.linalg.solve(self.weight, columns)",
)


def _plain_conv(**changes: str) -> str:
    return _fill(_PLAIN_CONV, _PLAIN_CONV_REFERENCE, changes)


_LU_CONV = '''
class InvConv1x1(nn.Module):
    def __init__(self, channels):
        super().__init__()
        permutation, lower, upper = torch.linalg.lu({start})
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign", torch.sign(diagonal))
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_scale = nn.Parameter(torch.log(diagonal.abs()))

    def matrix(self):
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.log_scale))
        return self.permutation @ lower @ upper

    def forward(self, x):
        batch, _, height, width = x.shape
        z = torch.einsum("ij,bjhw->bihw", self.matrix(), x)
        return z, height * width * {log_abs_det} * x.new_ones(batch)

    def inverse(self, z):
        batch, _, height, width = z.shape
        x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.matrix()), z)
        return x, -height * width * {log_abs_det} * z.new_ones(batch)
'''
_LU_CONV_REFERENCE = dict(
    start="torch.linalg.qr(torch.randn(channels, channels))[0]",
    log_abs_det="self.log_scale.sum()",
)


def _lu_conv(**changes: str) -> str:
    return _fill(_LU_CONV, _LU_CONV_REFERENCE, changes)


_COUPLING = '''
class GlowCoupling(nn.Module):
    def __init__(self, channels, hidden_channels):
        super().__init__()
        if channels % 2:
            raise ValueError("GlowCoupling needs an even number of channels, got " + str(channels))
        self.half = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(self.half, hidden_channels, 3, padding=1), {activation},
            nn.Conv2d(hidden_channels, hidden_channels, 1), {activation},
            nn.Conv2d(hidden_channels, channels, 3, padding=1),
        )
        {zero_init}

    def scale_and_shift(self, kept):
        h = {conditioned}
        return {scale}, h[:, self.half:]

    def forward(self, x):
        transformed, kept = x[:, :self.half], x[:, self.half:]  # the second half is kept
        scale, shift = self.scale_and_shift(kept)
        z = torch.cat([transformed * scale + shift, kept], dim=1)
        return z, {log_det}

    def inverse(self, z):
        transformed, kept = z[:, :self.half], z[:, self.half:]
        scale, shift = self.scale_and_shift(kept)
        x = torch.cat([{inverse_transformed}, kept], dim=1)
        return x, -{log_det_of_z}
'''
_COUPLING_REFERENCE = dict(
    activation="nn.ReLU()",
    zero_init="nn.init.zeros_(self.net[-1].weight)\n        nn.init.zeros_(self.net[-1].bias)",
    conditioned="self.net(kept)",
    # Glow's sigmoid(s + 2), divided by sigmoid(2) so that the network's output 0 gives the scale 1
    scale="torch.sigmoid(h[:, :self.half] + 2.0) / torch.sigmoid(torch.tensor(2.0, dtype=h.dtype))",
    log_det="torch.log(scale).flatten(1).sum(dim=1)",
    inverse_transformed="(transformed - shift) / scale",
    log_det_of_z="torch.log(scale).flatten(1).sum(dim=1)",
)


def _coupling(**changes: str) -> str:
    return _fill(_COUPLING, _COUPLING_REFERENCE, changes)


BUGS = {
    # -------------------------------------------------------------------------------- Squeeze
    "squeeze_inverse_in_another_order": Bug(
        "Squeeze",
        # The forward order is c + C (2 i + j), the inverse reads the channels as 4 c + 2 i + j.
        _squeeze(unsqueezed="z.reshape(batch, channels // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)"
                            ".reshape(batch, channels // 4, 2 * height, 2 * width)"),
        frozenset({"squeeze_inverse_undoes_forward"}),
        True,
    ),
    "squeeze_by_reshape": Bug(
        "Squeeze",
        # A plain reshape is a bijection with a matching inverse, but it stacks whole rows, not 2x2 blocks.
        _squeeze(squeezed="x.reshape(batch, 4 * channels, height // 2, width // 2)",
                 unsqueezed="z.reshape(batch, channels // 4, 2 * height, 2 * width)"),
        frozenset({"squeeze_shape_and_block_locality"}),
        True,
    ),
    "squeeze_transposes_the_blocks_back": Bug(
        "Squeeze",
        # The inverse swaps i and j: x[2h + j, 2w + i] gets the value of x[2h + i, 2w + j].
        _squeeze(unsqueezed="blocks.permute(0, 3, 4, 2, 5, 1).reshape(batch, channels // 4, 2 * height, 2 * width)"),
        frozenset({"squeeze_inverse_undoes_forward"}),
        True,
    ),
    "squeeze_log_det_of_torchs_default_dtype": Bug(
        "Squeeze",
        # torch.zeros(batch) is float32 whatever the input: log p(x) of a float64 model would be rounded.
        _squeeze(log_det="torch.zeros(batch)"),
        frozenset({"squeeze_shape_and_block_locality", "squeeze_dtypes_untouched_inputs_and_independence"}),
        False,
    ),
    # ----------------------------------------------------------------------------- InvConv1x1
    "invconv_log_det_of_one_pixel": Bug(
        "InvConv1x1",
        # log|det W| once, not once per pixel.
        _plain_conv(log_det="torch.linalg.slogdet(self.weight).logabsdet"),
        frozenset({"invconv_log_det_matches_numerical_jacobian", "invconv_log_det_counts_every_pixel"}),
        True,
    ),
    "invconv_log_det_without_abs": Bug(
        "InvConv1x1",
        # log det W, not log|det W|: NaN whenever det W < 0, a reflection (half of the random orthogonal matrices).
        # Every hidden check meets one: the sign drawn at the start stays, and the checks draw many layers.
        # The visible check's layer happens to start as a rotation, so it passes.
        _plain_conv(log_det="height * width * torch.logdet(self.weight)"),
        frozenset({"invconv_starts_orthogonal", "invconv_log_det_matches_numerical_jacobian",
                   "invconv_log_det_counts_every_pixel", "invconv_inverse_with_random_parameters",
                   "invconv_shapes_dtypes_and_independence", "invconv_gradients_reach_every_parameter"}),
        False,
    ),
    "invconv_gaussian_init": Bug(
        "InvConv1x1",
        # A Gaussian matrix scaled by 1 / sqrt(C): invertible, but not orthogonal (log|det W| != 0 at the start).
        _plain_conv(init="self.weight = nn.Parameter(torch.randn(channels, channels) / channels ** 0.5)"),
        frozenset({"invconv_starts_orthogonal"}),
        True,
    ),
    "invconv_identity_init": Bug(
        "InvConv1x1",
        # Orthogonal, but the identity: the layer mixes nothing until training moves it.
        _lu_conv(start="torch.eye(channels)"),
        frozenset({"invconv_starts_orthogonal"}),
        False,
    ),
    "invconv_inverse_by_transpose": Bug(
        "InvConv1x1",
        # W^T = W^-1 only while W is orthogonal: right at the start, wrong once training moves W.
        _plain_conv(solve="(self.weight.T @ columns)"),
        frozenset({"invconv_inverse_with_random_parameters"}),
        True,
    ),
    "invconv_log_det_detached": Bug(
        "InvConv1x1",
        # Right numbers, but training would never see the log-det's gradient.
        _lu_conv(log_abs_det="self.log_scale.detach().sum()"),
        frozenset({"invconv_gradients_reach_every_parameter"}),
        False,
    ),
    # --------------------------------------------------------------------------- GlowCoupling
    "coupling_last_conv_not_zero": Bug(
        "GlowCoupling",
        # The default (random) initialisation of the last convolution: a new layer is a random warp.
        _coupling(zero_init="pass"),
        frozenset({"glow_coupling_starts_as_the_identity"}),
        True,
    ),
    "coupling_mixes_samples": Bug(
        "GlowCoupling",
        # The conditioner's features centred over the batch (a BatchNorm without its statistics):
        # each sample's scale and shift depend on the other samples.
        # The numerical Jacobian moves every sample at once, so the centring also hides the kept half's
        # influence from it: the structure check fails with the independence one.
        _coupling(conditioned="self.net(kept - kept.mean(dim=0, keepdim=True))"),
        frozenset({"glow_coupling_keeps_one_half_and_is_triangular", "glow_coupling_shapes_dtypes_independence_and_width"}),
        True,
    ),
    "coupling_log_det_of_the_scale": Bug(
        "GlowCoupling",
        # The sum of the scales, not of their logarithms: not even 0 for a new layer (every scale is 1).
        _coupling(log_det="scale.flatten(1).sum(dim=1)", log_det_of_z="scale.flatten(1).sum(dim=1)"),
        frozenset({"glow_coupling_starts_as_the_identity", "glow_coupling_log_det_matches_numerical_jacobian",
                   "glow_coupling_inverse_and_its_log_det"}),
        True,
    ),
    "coupling_inverse_adds_the_shift": Bug(
        "GlowCoupling",
        _coupling(inverse_transformed="(transformed + shift) / scale"),  # the shift with the wrong sign
        frozenset({"glow_coupling_inverse_and_its_log_det"}),
        True,
    ),
    "coupling_log_det_from_the_shift_half": Bug(
        "GlowCoupling",
        # exp(s) (accepted), but the log-det sums the wrong half of the network's output: the shifts.
        _coupling(scale="torch.exp(h[:, :self.half])", log_det="shift.flatten(1).sum(dim=1)",
                  log_det_of_z="shift.flatten(1).sum(dim=1)"),
        frozenset({"glow_coupling_log_det_matches_numerical_jacobian", "glow_coupling_inverse_and_its_log_det"}),
        True,
    ),
}

# One bug per target: the "buggy student" of the grading-pipeline test.
ONE_BUG_PER_FUNCTION = ["squeeze_by_reshape", "invconv_inverse_by_transpose", "coupling_last_conv_not_zero"]
