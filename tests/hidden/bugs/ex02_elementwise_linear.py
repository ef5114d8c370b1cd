"""Deliberately wrong solutions of ex02, each with the checks it must fail (instructor-only).

The tests grade each one and require that it loses exactly these checks' points: a bug that
slips through, or one that costs the points of an unrelated check, fails the suite. Each source
defines its whole class, so that one class's bug cannot leak into another's grade.
"""

from course_grading.bugs import Bug, given_code


# Each class is written once with placeholders; a bug is the reference with one or two of them changed.
_ACTNORM = '''
class ActNorm(nn.Module):
    def __init__(self, num_features):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        {flag}

    def forward(self, x):
        per_channel = [1, -1] + [1] * (x.dim() - 2)
        if {condition}:
            dims = [0] + list(range(2, x.dim()))
            with torch.no_grad():
                std = {std}
                self.log_scale.copy_(-torch.log(std))
                self.bias.copy_(-x.mean(dim=dims) / std)
                {set_flag}
        z = x * torch.exp(self.log_scale).view(per_channel) + self.bias.view(per_channel)
        pixels = math.prod(x.shape[2:])
        return z, {log_det} * x.new_ones(x.shape[0])

    def inverse(self, z):
        per_channel = [1, -1] + [1] * (z.dim() - 2)
        x = (z - self.bias.view(per_channel)) * torch.exp(-self.log_scale).view(per_channel)
        pixels = math.prod(z.shape[2:])
        return x, -{log_det} * z.new_ones(z.shape[0])
'''
_ACTNORM_REFERENCE = dict(
    flag='self.register_buffer("initialized", torch.tensor(False))',
    condition="self.training and not self.initialized",
    std="x.std(dim=dims, correction=0).clamp_min(1e-6)",
    set_flag="self.initialized.fill_(True)",
    log_det="pixels * self.log_scale.sum()",
)


def _actnorm(**changes: str) -> str:
    return _ACTNORM.format(**{**_ACTNORM_REFERENCE, **changes})


_LEAKY_RELU = '''
class LeakyReLUFlow(nn.Module):
    def __init__(self, negative_slope=0.1):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        negative = x < 0
        z = {forward_map}
        {in_place}
        return z, math.log(self.negative_slope) * negative.reshape(x.shape[0], -1).sum(dim=1).to(x.dtype)

    def inverse(self, z):
        negative = z < 0
        x = torch.where(negative, z / self.negative_slope, z)
        return x, {inverse_sign}math.log(self.negative_slope) * negative.reshape(z.shape[0], -1).sum(dim=1).to(z.dtype)
'''
_LEAKY_RELU_REFERENCE = dict(
    forward_map="torch.where(negative, self.negative_slope * x, x)",
    in_place="",
    inverse_sign="-",
)


def _leaky_relu(**changes: str) -> str:
    return _LEAKY_RELU.format(**{**_LEAKY_RELU_REFERENCE, **changes})


_LU_LINEAR = '''
class LULinear(nn.Module):
    def __init__(self, features):
        super().__init__()
        rotation, _ = torch.linalg.qr(torch.randn(features, features))
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign", torch.sign(diagonal))
        self.lower = nn.Parameter({lower_start})
        self.upper = nn.Parameter(torch.triu(upper, diagonal=1))
        self.log_s = nn.Parameter(torch.log(diagonal.abs()))
        self.bias = nn.Parameter(torch.zeros(features))

    def factors(self):
        identity = torch.eye(self.log_s.shape[0], dtype=self.log_s.dtype, device=self.log_s.device)
        unit_lower = {unit_lower}
        upper_with_scales = torch.triu(self.upper, diagonal=1) + torch.diag(self.sign * torch.exp(self.log_s))
        return unit_lower, upper_with_scales

    def forward(self, x):
        unit_lower, upper_with_scales = self.factors()
        weight = self.permutation @ unit_lower @ upper_with_scales
        return x @ weight.T + self.bias, {log_det} * x.new_ones(x.shape[0])

    def inverse(self, z):
        unit_lower, upper_with_scales = self.factors()
        columns = {permuted}
        columns = torch.linalg.solve_triangular(unit_lower, columns, upper=False, unitriangular={unitriangular})
        columns = torch.linalg.solve_triangular(upper_with_scales, columns, upper=True)
        return columns.T, -self.log_s.sum() * z.new_ones(z.shape[0])
'''
_LU_LINEAR_REFERENCE = dict(
    lower_start="torch.tril(lower, diagonal=-1)",
    unit_lower="torch.tril(self.lower, diagonal=-1) + identity",
    log_det="self.log_s.sum()",
    permuted="self.permutation.T @ (z - self.bias).T",
    unitriangular="True",
)


def _lu_linear(**changes: str) -> str:
    return _LU_LINEAR.format(**{**_LU_LINEAR_REFERENCE, **changes})


_SIGMOID = '''
class SigmoidFlow(nn.Module):
    def forward(self, x):
        z = torch.sigmoid(x)
        return z, {forward_sign}(torch.log(z) + torch.log1p(-z)).flatten(1).sum(dim=1)

    def inverse(self, z):
        x = torch.log(z) - torch.log1p(-z)
        return x, -({inverse_terms}){inverse_sum}
'''
_SIGMOID_REFERENCE = dict(forward_sign="", inverse_terms="torch.log(z) + torch.log1p(-z)",
                          inverse_sum=".flatten(1).sum(dim=1)")


def _sigmoid(**changes: str) -> str:
    return _SIGMOID.format(**{**_SIGMOID_REFERENCE, **changes})


BUGS = {
    # ------------------------------------------------------------------------------- ActNorm
    "actnorm_initialises_on_every_call": Bug(
        "ActNorm",
        _actnorm(condition="self.training"),  # forgets to ask whether it is initialised already
        frozenset({"actnorm_log_det_matches_numerical_jacobian", "actnorm_log_det_counts_every_pixel",
                   "actnorm_inverse_shapes_dtypes_and_independence", "actnorm_initialises_only_once",
                   "actnorm_keeps_its_initialisation_through_state_dict", "actnorm_gradients_reach_every_parameter"}),
        True,
    ),
    "actnorm_log_det_ignores_pixels": Bug(
        "ActNorm",
        _actnorm(log_det="self.log_scale.sum()"),  # one log-scale per channel, not one per pixel, both ways
        frozenset({"actnorm_log_det_counts_every_pixel"}),
        True,
    ),
    "actnorm_flag_outside_state_dict": Bug(
        "ActNorm",
        # A plain attribute: it is not in the state_dict, so a loaded copy initialises itself again.
        _actnorm(flag="self.initialized = False", set_flag="self.initialized = True"),
        frozenset({"actnorm_keeps_its_initialisation_through_state_dict"}),
        False,
    ),
    "actnorm_averages_per_pixel_stds": Bug(
        "ActNorm",
        # The mean of the per-pixel standard deviations, not the channel's standard deviation.
        _actnorm(std="x.std(dim=0, correction=0).reshape(x.shape[1], -1).mean(dim=1).clamp_min(1e-6)"),
        frozenset({"initialisation_standardises_each_channel"}),
        False,
    ),
    "actnorm_log_det_detached": Bug(
        "ActNorm",
        # No gradient of log_det reaches log_scale: training would ignore the volume change.
        _actnorm(log_det="pixels * self.log_scale.detach().sum()"),
        frozenset({"actnorm_gradients_reach_every_parameter"}),
        False,
    ),
    # ------------------------------------------------------------------------- LeakyReLUFlow
    "leaky_relu_inverse_log_det_sign": Bug(
        "LeakyReLUFlow",
        _leaky_relu(inverse_sign="+"),  # returns log|det dz/dx| instead of log|det dx/dz|
        frozenset({"leaky_relu_inverse_and_log_det", "leaky_relu_works_for_slopes_above_one"}),
        True,
    ),
    "leaky_relu_maximum_form": Bug(
        "LeakyReLUFlow",
        _leaky_relu(forward_map="torch.maximum(x, self.negative_slope * x)"),  # the leaky ReLU only when slope <= 1
        frozenset({"leaky_relu_works_for_slopes_above_one"}),
        False,
    ),
    "leaky_relu_changes_its_input": Bug(
        "LeakyReLUFlow",
        _leaky_relu(forward_map="x", in_place="z[negative] *= self.negative_slope"),  # scales the caller's x
        frozenset({"leaky_relu_shapes_dtypes_and_independence"}),
        True,
    ),
    # ------------------------------------------------------------------------------ LULinear
    "lu_linear_log_det_by_slogdet": Bug(
        "LULinear",
        _lu_linear(log_det="torch.linalg.slogdet(weight).logabsdet"),  # the right value, in O(d^3)
        frozenset({"lu_linear_avoids_dense_determinants_and_inverses"}),
        False,
    ),
    "lu_linear_inverse_by_dense_inverse": Bug(
        "LULinear",
        _lu_linear(permuted="torch.inverse(self.permutation) @ (z - self.bias).T"),  # right, but a dense inverse
        frozenset({"lu_linear_avoids_dense_determinants_and_inverses"}),
        False,
    ),
    "lu_linear_lower_diagonal_trained": Bug(
        "LULinear",
        # L's diagonal is trained too, but log_det still assumes it is 1.
        _lu_linear(lower_start="lower", unit_lower="torch.tril(self.lower)", unitriangular="False"),
        frozenset({"lu_linear_log_det_matches_numerical_jacobian", "lu_linear_inverse_to_1e_6_in_float64"}),
        True,
    ),
    "lu_linear_lower_not_masked": Bug(
        "LULinear",
        _lu_linear(unit_lower="self.lower + identity"),  # entries above the diagonal leak into L
        frozenset({"lu_linear_log_det_matches_numerical_jacobian", "lu_linear_inverse_to_1e_6_in_float64"}),
        True,
    ),
    "lu_linear_inverse_forgets_permutation": Bug(
        "LULinear",
        _lu_linear(permuted="(z - self.bias).T"),  # P^T is missing
        frozenset({"lu_linear_inverse_to_1e_6_in_float64"}),
        True,
    ),
    # ------------------------------------------------------------------- SigmoidFlow (diagnosis)
    "sigmoid_as_given": Bug(
        "SigmoidFlow",
        given_code("ex02_elementwise_linear", "SigmoidFlow"),  # the inverse returns log|det dz/dx|
        frozenset({"sigmoid_inverse_log_det_matches_numerical_jacobian", "sigmoid_inverse_log_det_counts_every_pixel",
                   "sigmoid_round_trip_negates_log_det"}),
        True,
    ),
    "sigmoid_negates_the_forward_instead": Bug(
        "SigmoidFlow",
        _sigmoid(forward_sign="-", inverse_terms="-torch.log(z) - torch.log1p(-z)"),  # the two still cancel
        frozenset({"sigmoid_inverse_log_det_matches_numerical_jacobian", "sigmoid_inverse_log_det_counts_every_pixel",
                   "sigmoid_forward_unchanged"}),
        True,
    ),
    "sigmoid_inverse_sums_channels_only": Bug(
        "SigmoidFlow",
        _sigmoid(inverse_sum=".sum(dim=1)"),  # right for [B, D], [B, H, W] for images
        frozenset({"sigmoid_inverse_log_det_counts_every_pixel", "sigmoid_round_trip_negates_log_det"}),
        False,
    ),
    "sigmoid_inverse_log_det_at_sigmoid_of_z": Bug(
        "SigmoidFlow",
        _sigmoid(inverse_terms="torch.log(torch.sigmoid(z)) + torch.log1p(-torch.sigmoid(z))"),
        frozenset({"sigmoid_inverse_log_det_matches_numerical_jacobian", "sigmoid_inverse_log_det_counts_every_pixel",
                   "sigmoid_round_trip_negates_log_det"}),
        True,
    ),
}

# One bug per class: the "buggy student" of the grading-pipeline test.
ONE_BUG_PER_FUNCTION = ["actnorm_log_det_ignores_pixels", "leaky_relu_inverse_log_det_sign", "lu_linear_log_det_by_slogdet",
                        "sigmoid_as_given"]
