"""Deliberately wrong solutions of ex03, each with the checks it must fail (instructor-only).

The tests grade each one and require that it loses exactly these checks' points: a bug that
slips through, or one that costs the points of an unrelated check, fails the suite. Each source
defines its whole function or class, so that one target's bug cannot leak into another's grade.
"""

from course_grading.bugs import Bug, given_code


# Each target is written once with placeholders; a bug is the reference with one or two of them changed.
_CHECKERBOARD = '''
def checkerboard_mask(height, width, parity=0):
    {board}
'''
_CHECKERBOARD_REFERENCE = dict(
    board="""rows = torch.arange(height).reshape(height, 1)
    columns = torch.arange(width).reshape(1, width)
    return ((rows + columns) % 2 == parity).to(torch.get_default_dtype())""",
)


def _checkerboard(**changes: str) -> str:
    return _CHECKERBOARD.format(**{**_CHECKERBOARD_REFERENCE, **changes})


_ADDITIVE = '''
class AdditiveCoupling(nn.Module):
    def __init__(self, mask, hidden_features):
        super().__init__()
        features = mask.numel()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.get_default_dtype()).clone())
        self.shift_network = nn.Sequential(
            nn.Linear(features, hidden_features), {activation},
            nn.Linear(hidden_features, hidden_features), nn.SiLU(),
            nn.Linear(hidden_features, features),
        )
        nn.init.zeros_(self.shift_network[-1].weight)
        nn.init.zeros_(self.shift_network[-1].bias)

    def shift(self, x):
        return {shift}

    def forward(self, x):
        return x + self.shift(x), {log_det}

    def inverse(self, z):
        return z {inverse_sign} self.shift(z), z.new_zeros(z.shape[0])
'''
_ADDITIVE_REFERENCE = dict(
    activation="nn.SiLU()",
    shift="(1 - self.mask) * self.shift_network(self.mask * x)",
    log_det="x.new_zeros(x.shape[0])",
    inverse_sign="-",
)


def _additive(**changes: str) -> str:
    return _ADDITIVE.format(**{**_ADDITIVE_REFERENCE, **changes})


_AFFINE = '''
class AffineCoupling(nn.Module):
    def __init__(self, mask, hidden_features):
        super().__init__()
        features = mask.numel()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.get_default_dtype()).clone())
        self.scale_bound = 3.0
        self.conditioner = nn.Sequential(
            nn.Linear(features, hidden_features), nn.SiLU(),
            nn.Linear(hidden_features, hidden_features), nn.SiLU(),
            nn.Linear(hidden_features, 2 * features),
        )
        nn.init.zeros_(self.conditioner[-1].weight)
        nn.init.zeros_(self.conditioner[-1].bias)

    def log_scale_and_shift(self, x):
        raw_log_scale, shift = self.conditioner({conditioner_input}).chunk(2, dim=1)
        log_scale = {log_scale}
        return {masked_log_scale}, (1 - self.mask) * shift

    def forward(self, x):
        log_scale, shift = self.log_scale_and_shift(x)
        return x * torch.exp(log_scale) + shift, {log_det}

    def inverse(self, z):
        log_scale, shift = self.log_scale_and_shift(z)
        return {inverse_map}, -log_scale.sum(dim=1)
'''
_AFFINE_REFERENCE = dict(
    conditioner_input="self.mask * x",
    log_scale="self.scale_bound * torch.tanh(raw_log_scale / self.scale_bound)",
    masked_log_scale="(1 - self.mask) * log_scale",
    log_det="log_scale.sum(dim=1)",
    inverse_map="(z - shift) * torch.exp(-log_scale)",
)


def _affine(**changes: str) -> str:
    return _AFFINE.format(**{**_AFFINE_REFERENCE, **changes})


_BITS = '''
def dequantized_bits_per_dim(log_prob, images, noise):
    x = {x}
    dimension = {dimension}
    return (-log_prob(x) + dimension * math.log(256)) / (dimension * {log_base})
'''
_BITS_REFERENCE = dict(x="(images + noise) / 256", dimension="math.prod(images.shape[1:])", log_base="math.log(2)")


def _bits(**changes: str) -> str:
    return _BITS.format(**{**_BITS_REFERENCE, **changes})


_BITS_CHECKS = frozenset({"uniform_density_gives_eight_bits", "bits_match_the_gaussian_closed_form",
                          "bits_for_any_image_shape"})

BUGS = {
    # ------------------------------------------------------------------------ checkerboard_mask
    "checkerboard_parity_flipped": Bug(
        "checkerboard_mask",
        _checkerboard(board="""rows = torch.arange(height).reshape(height, 1)
    columns = torch.arange(width).reshape(1, width)
    return ((rows + columns) % 2 != parity).to(torch.get_default_dtype())"""),  # parity 0 starts with a 0
        frozenset({"checkerboard_values_and_parity", "checkerboard_odd_and_non_square_sizes"}),
        True,
    ),
    "checkerboard_from_flat_alternating": Bug(
        "checkerboard_mask",
        # 0, 1, 0, 1, ... over the flattened board: a checkerboard only when the width is odd.
        _checkerboard(board="""return (torch.arange(height * width) % 2 == parity).float().reshape(height, width)"""),
        frozenset({"checkerboard_values_and_parity", "checkerboard_odd_and_non_square_sizes"}),
        False,
    ),
    "checkerboard_assumes_square": Bug(
        "checkerboard_mask",
        _checkerboard(board="""rows = torch.arange(height).reshape(height, 1)
    columns = torch.arange(height).reshape(1, height)
    return ((rows + columns) % 2 == parity).to(torch.get_default_dtype())"""),  # [height, height]
        frozenset({"checkerboard_odd_and_non_square_sizes"}),
        True,
    ),
    "checkerboard_boolean": Bug(
        "checkerboard_mask",
        _checkerboard(board="""rows = torch.arange(height).reshape(height, 1)
    columns = torch.arange(width).reshape(1, width)
    return (rows + columns) % 2 == parity"""),  # True/False: the right pattern, not a float mask
        frozenset({"checkerboard_is_a_float_tensor"}),
        True,
    ),
    # ------------------------------------------------------------------------- AdditiveCoupling
    "additive_conditioner_sees_every_feature": Bug(
        "AdditiveCoupling",
        # t(x) instead of t(m * x): the Jacobian is no longer triangular and the inverse cannot recompute t.
        _additive(shift="(1 - self.mask) * self.shift_network(x)"),
        frozenset({"additive_log_det_matches_numerical_jacobian", "additive_inverse_and_its_log_det",
                   "additive_masked_features_pass_and_jacobian_is_triangular"}),
        True,
    ),
    "additive_inverse_adds_the_shift": Bug(
        "AdditiveCoupling",
        _additive(inverse_sign="+"),
        frozenset({"additive_inverse_and_its_log_det"}),
        True,
    ),
    "additive_log_det_always_float32": Bug(
        "AdditiveCoupling",
        _additive(log_det="torch.zeros(x.shape[0])"),  # float32 whatever the input's dtype
        frozenset({"additive_shapes_dtypes_and_independence"}),
        True,
    ),
    "additive_shift_detached": Bug(
        "AdditiveCoupling",
        # No gradient reaches the network: training would never change the layer.
        _additive(shift="(1 - self.mask) * self.shift_network(self.mask * x).detach()"),
        frozenset({"additive_gradients_reach_every_parameter"}),
        False,
    ),
    "additive_batch_norm_in_conditioner": Bug(
        "AdditiveCoupling",
        # Batch statistics tie the samples together (and a shift of every sample alike goes unseen).
        _additive(activation="nn.BatchNorm1d(hidden_features), nn.SiLU()"),
        frozenset({"additive_masked_features_pass_and_jacobian_is_triangular", "additive_shapes_dtypes_and_independence"}),
        False,
    ),
    # --------------------------------------------------------------------------- AffineCoupling
    "affine_unbounded_scale": Bug(
        "AffineCoupling",
        _affine(log_scale="raw_log_scale"),  # exp(s) overflows once the network's output grows
        frozenset({"affine_scale_is_bounded"}),
        True,
    ),
    "affine_inverse_shifts_after_scaling": Bug(
        "AffineCoupling",
        _affine(inverse_map="z * torch.exp(-log_scale) - shift"),  # the shift must come off first
        frozenset({"affine_inverse_and_its_log_det"}),
        True,
    ),
    "affine_log_det_sums_the_batch": Bug(
        "AffineCoupling",
        _affine(log_det="log_scale.sum() * x.new_ones(x.shape[0])"),  # one number for the whole batch
        frozenset({"affine_log_det_matches_numerical_jacobian", "affine_inverse_and_its_log_det",
                   "affine_shapes_dtypes_and_independence", "affine_scale_is_bounded"}),
        True,
    ),
    "affine_scales_kept_features_too": Bug(
        "AffineCoupling",
        # s is not zeroed where mask == 1: those features are scaled by a function of themselves.
        _affine(masked_log_scale="log_scale"),
        frozenset({"affine_log_det_matches_numerical_jacobian", "affine_inverse_and_its_log_det",
                   "affine_masked_features_pass_and_jacobian_is_triangular", "affine_scale_is_bounded"}),
        True,
    ),
    "affine_conditioner_sees_every_feature": Bug(
        "AffineCoupling",
        _affine(conditioner_input="x"),
        frozenset({"affine_log_det_matches_numerical_jacobian", "affine_inverse_and_its_log_det",
                   "affine_masked_features_pass_and_jacobian_is_triangular"}),
        True,
    ),
    "affine_log_det_detached": Bug(
        "AffineCoupling",
        _affine(log_det="log_scale.detach().sum(dim=1)"),  # training would ignore the volume change
        frozenset({"affine_gradients_reach_every_parameter"}),
        False,
    ),
    "additive_subclasses_course_pkg": Bug(
        "AdditiveCoupling",
        # Hands the work to the reference layer: refused by every check that runs it.
        """
from course_pkg.flows import AdditiveCoupling as ReferenceCoupling
from course_pkg.nets import MLP


class AdditiveCoupling(ReferenceCoupling):
    def __init__(self, mask, hidden_features):
        super().__init__(mask, MLP(mask.numel(), mask.numel(), hidden_features))
""",
        frozenset({"additive_log_det_matches_numerical_jacobian", "additive_inverse_and_its_log_det",
                   "additive_masked_features_pass_and_jacobian_is_triangular",
                   "additive_shapes_dtypes_and_independence", "additive_gradients_reach_every_parameter"}),
        False,
    ),
    "affine_borrows_course_pkgs_scale_clip": Bug(
        "AffineCoupling",
        # Right in every number, but the bounded scale comes from course_pkg's own helper.
        _affine(log_scale="__import__('course_pkg.flows.transformers', fromlist=['Affine']).Affine(self.scale_bound)"
                          ".log_scale_and_shift(torch.stack([raw_log_scale, shift], dim=-1))[0]"),
        frozenset({"affine_log_det_matches_numerical_jacobian", "affine_inverse_and_its_log_det",
                   "affine_masked_features_pass_and_jacobian_is_triangular", "affine_shapes_dtypes_and_independence",
                   "affine_gradients_reach_every_parameter", "affine_scale_is_bounded"}),
        False,
    ),
    # ----------------------------------------------------- dequantized_bits_per_dim (diagnosis)
    "bits_as_given": Bug(
        "dequantized_bits_per_dim",
        given_code("ex03_coupling", "dequantized_bits_per_dim"),  # the + D log 256 of the rescaling is missing
        _BITS_CHECKS,
        True,
    ),
    "bits_rescale_by_255": Bug(
        "dequantized_bits_per_dim", _bits(x="(images + noise) / 255"),  # the bins no longer fill [0, 1)
        _BITS_CHECKS - {"uniform_density_gives_eight_bits"}, False,
    ),
    "bits_forget_the_noise": Bug(
        "dequantized_bits_per_dim", _bits(x="images / 256"),  # log p at the bins' corners
        _BITS_CHECKS - {"uniform_density_gives_eight_bits"}, False,
    ),
    "bits_hard_code_mnist": Bug(
        "dequantized_bits_per_dim", _bits(dimension="784"),  # D of a 28 x 28 image only
        frozenset({"bits_for_any_image_shape"}), True,
    ),
    "bits_count_the_batch": Bug(
        "dequantized_bits_per_dim", _bits(dimension="images.numel()"),  # B * D, not D
        _BITS_CHECKS - {"uniform_density_gives_eight_bits"}, True,
    ),
    "bits_in_nats": Bug(
        "dequantized_bits_per_dim", _bits(log_base="1"),  # nats per dimension
        _BITS_CHECKS, True,
    ),
    "bits_delegate_to_course_pkg": Bug(
        "dequantized_bits_per_dim",
        '''
def dequantized_bits_per_dim(log_prob, images, noise):
    from course_pkg.preprocessing import discrete_bits_per_dim
    return discrete_bits_per_dim(log_prob((images + noise) / 256), math.prod(images.shape[1:]))
''',
        _BITS_CHECKS, False,
    ),
}

# One bug per target: the "buggy student" of the grading-pipeline test.
ONE_BUG_PER_FUNCTION = ["checkerboard_from_flat_alternating", "additive_inverse_adds_the_shift",
                        "affine_log_det_sums_the_batch",
                        "bits_as_given"]
