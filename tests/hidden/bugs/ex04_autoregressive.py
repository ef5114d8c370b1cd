"""Deliberately wrong solutions of ex04, each with the checks it must fail (instructor-only).

The tests grade each one and require that it loses exactly these checks' points: a bug that
slips through, or one that costs the points of an unrelated check, fails the suite. Each source
defines its whole class, so that one target's bug cannot leak into another's grade (``MAFLayer``
and ``IAFLayer`` use the notebook's ``MaskedLinear``, which the bugs below leave correct).
"""

from course_grading.bugs import Bug


# Each target is written once with placeholders; a bug is the reference with one or two of them changed.
_MASKED_LINEAR = '''
class MaskedLinear(nn.Linear):
    def __init__(self, in_features, out_features, mask):
        super().__init__(in_features, out_features)
        {store_mask}

    def forward(self, x):
        return {output}
'''
_MASKED_LINEAR_REFERENCE = dict(
    store_mask='self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.get_default_dtype()).clone())',
    output="x @ (self.weight * self.mask).T + self.bias",
)


def _masked_linear(**changes: str) -> str:
    return _MASKED_LINEAR.format(**{**_MASKED_LINEAR_REFERENCE, **changes})


# The MADE conditioner, the same in both layers: degrees 1..D of the inputs, hidden degrees cycling
# through 1..D-1, and the outputs (mu, then the raw alpha) of feature i connected to hidden units
# of degree < i.
_MADE = '''
    def __init__(self, features, hidden_features):
        super().__init__()
        self.features = features
        self.scale_bound = 3.0
        input_degrees = torch.arange(1, features + 1)
        hidden_degrees = torch.arange(hidden_features) % max(features - 1, 1) + 1
        output_degrees = torch.cat([input_degrees, input_degrees])
        self.conditioner = nn.Sequential(
            MaskedLinear(features, hidden_features, (hidden_degrees[:, None] >= input_degrees[None, :]).float()),
            nn.SiLU(),
            MaskedLinear(hidden_features, hidden_features, (hidden_degrees[:, None] >= hidden_degrees[None, :]).float()),
            nn.SiLU(),
            MaskedLinear(hidden_features, 2 * features, (output_degrees[:, None] {output_comparison} hidden_degrees[None, :]).float()),
        )
        nn.init.zeros_(self.conditioner[-1].weight)
        nn.init.zeros_(self.conditioner[-1].bias)

    def shift_and_log_scale(self, h):
        shift, raw_log_scale = self.conditioner(h).chunk(2, dim=1)
        return shift, {log_scale}
'''
_MADE_REFERENCE = dict(
    output_comparison=">",
    log_scale="self.scale_bound * torch.tanh(raw_log_scale / self.scale_bound)",
)

_MAF = '''
class MAFLayer(nn.Module):''' + _MADE + '''
    def forward(self, x):
        {forward_body}

    def inverse(self, z):
        {inverse_body}
'''
_MAF_REFERENCE = dict(
    _MADE_REFERENCE,
    forward_body="""shift, log_scale = self.shift_and_log_scale(x)
        return (x - shift) * torch.exp(-log_scale), {log_det}""",
    log_det="-log_scale.sum(dim=1)",
    inverse_body="""x = torch.zeros_like(z)
        for _ in range(self.features):
            shift, log_scale = self.shift_and_log_scale(x)
            x = {inverse_step}
        return x, log_scale.sum(dim=1)""",
    inverse_step="z * torch.exp(log_scale) + shift",
)


def _fill(template: str, values: dict[str, str]) -> str:
    """``template`` with its placeholders filled, and those that the filled-in text brings along."""
    filled = template.format(**values)
    return filled.format(**values) if "{" in filled else filled


def _maf(**changes: str) -> str:
    return _fill(_MAF, {**_MAF_REFERENCE, **changes})


_IAF = '''
class IAFLayer(nn.Module):''' + _MADE + '''
    def forward(self, x):
        z = torch.zeros_like(x)
        for _ in range(self.features):
            shift, log_scale = self.shift_and_log_scale(z)
            z = {forward_step}
        return z, -log_scale.sum(dim=1)

    def inverse(self, z):
        {inverse_body}
'''
_IAF_REFERENCE = dict(
    _MADE_REFERENCE,
    forward_step="(x - shift) * torch.exp(-log_scale)",
    inverse_body="""shift, log_scale = self.shift_and_log_scale(z)
        return z * torch.exp(log_scale) + shift, {inverse_log_det}""",
    inverse_log_det="log_scale.sum(dim=1)",
)


def _iaf(**changes: str) -> str:
    return _fill(_IAF, {**_IAF_REFERENCE, **changes})


_BORROWED_CLIP = ("__import__('course_pkg.flows.transformers', fromlist=['Affine']).Affine(self.scale_bound)"
                  ".log_scale_and_shift(torch.stack([raw_log_scale, shift], dim=-1))[0]")

BUGS = {
    # ----------------------------------------------------------------------------- MaskedLinear
    "masked_linear_ignores_the_mask": Bug(
        "MaskedLinear",
        _masked_linear(output="x @ self.weight.T + self.bias"),  # a plain linear layer
        frozenset({"masked_linear_output", "masked_linear_masked_weights_unused"}),
        True,
    ),
    "masked_linear_mask_not_a_buffer": Bug(
        "MaskedLinear",
        # A plain attribute: right numbers, but it stays float32 (and on the CPU) under layer.to(...).
        _masked_linear(store_mask="self.mask = torch.as_tensor(mask, dtype=torch.get_default_dtype()).clone()"),
        frozenset({"masked_linear_mask_is_a_buffer"}),
        True,
    ),
    "masked_linear_mask_trained": Bug(
        "MaskedLinear",
        # The mask as a parameter: training would move it off 0 and 1 and break the autoregressive order.
        _masked_linear(store_mask="self.mask = nn.Parameter(torch.as_tensor(mask, dtype=torch.get_default_dtype()).clone())"),
        frozenset({"masked_linear_mask_is_a_buffer"}),
        True,
    ),
    "masked_linear_weight_detached": Bug(
        "MaskedLinear",
        _masked_linear(output="x @ (self.weight.detach() * self.mask).T + self.bias"),  # the weight is never trained
        frozenset({"masked_linear_masked_weights_unused"}),
        False,
    ),
    "masked_linear_drops_the_bias": Bug(
        "MaskedLinear",
        _masked_linear(output="x @ (self.weight * self.mask).T"),
        frozenset({"masked_linear_output", "masked_linear_masked_weights_unused"}),
        True,
    ),
    "masked_linear_mask_transposed": Bug(
        "MaskedLinear",
        # The mask read as [in_features, out_features]: right only for square symmetric masks.
        _masked_linear(output="x @ (self.weight * self.mask.T).T + self.bias"),
        frozenset({"masked_linear_output", "masked_linear_masked_weights_unused", "masked_linear_shapes_and_dtypes"}),
        True,
    ),
    # --------------------------------------------------------------------------------- MAFLayer
    "maf_mask_sees_its_own_feature": Bug(
        "MAFLayer",
        # >= instead of >: mu_i and alpha_i see x_i, the Jacobian is no longer triangular.
        _maf(output_comparison=">="),
        frozenset({"maf_log_det_matches_numerical_jacobian", "maf_jacobian_is_triangular",
                   "maf_inverse_and_its_log_det"}),
        True,
    ),
    "maf_log_det_wrong_sign": Bug(
        "MAFLayer",
        _maf(log_det="log_scale.sum(dim=1)"),  # z = (x - mu) exp(-alpha) has log-det -sum(alpha)
        frozenset({"maf_log_det_matches_numerical_jacobian", "maf_inverse_and_its_log_det"}),
        True,
    ),
    "maf_inverse_shifts_before_scaling": Bug(
        "MAFLayer",
        _maf(inverse_step="(z + shift) * torch.exp(log_scale)"),  # the inverse must scale first, then add mu
        frozenset({"maf_inverse_and_its_log_det"}),
        True,
    ),
    "maf_inverse_in_one_pass": Bug(
        "MAFLayer",
        # mu and alpha from z instead of from the x being rebuilt: not the inverse.
        _maf(inverse_body="""shift, log_scale = self.shift_and_log_scale(z)
        return z * torch.exp(log_scale) + shift, log_scale.sum(dim=1)"""),
        frozenset({"maf_inverse_and_its_log_det"}),
        True,
    ),
    "maf_inverse_writes_in_place": Bug(
        "MAFLayer",
        # Right numbers, but x is changed in place after the conditioner used it: backward fails.
        _maf(inverse_body="""x = torch.zeros_like(z)
        for i in range(self.features):
            shift, log_scale = self.shift_and_log_scale(x)
            x[:, i] = z[:, i] * torch.exp(log_scale[:, i]) + shift[:, i]
        return x, log_scale.sum(dim=1)"""),
        frozenset({"maf_gradients_reach_every_parameter"}),
        False,
    ),
    "maf_forward_loops": Bug(
        "MAFLayer",
        # Right numbers, one pass of the conditioner per feature: D times the work of one pass.
        _maf(forward_body="""columns = []
        for i in range(self.features):
            shift, log_scale = self.shift_and_log_scale(x)
            columns.append((x[:, i] - shift[:, i]) * torch.exp(-log_scale[:, i]))
        return torch.stack(columns, dim=1), -log_scale.sum(dim=1)"""),
        frozenset({"maf_forward_runs_the_conditioner_once"}),
        False,
    ),
    "maf_unbounded_log_scale": Bug(
        "MAFLayer",
        _maf(log_scale="raw_log_scale"),  # exp(-alpha) overflows once the network's output grows
        frozenset({"maf_log_scale_is_bounded"}),
        True,
    ),
    "maf_log_det_detached": Bug(
        "MAFLayer",
        _maf(log_det="-log_scale.detach().sum(dim=1)"),  # training would ignore the volume change
        frozenset({"maf_gradients_reach_every_parameter"}),
        False,
    ),
    "maf_borrows_course_pkgs_scale_clip": Bug(
        "MAFLayer",
        # Right in every number, but the bounded scale comes from course_pkg's Affine transformer.
        _maf(log_scale=_BORROWED_CLIP),
        frozenset({"maf_log_det_matches_numerical_jacobian", "maf_jacobian_is_triangular",
                   "maf_inverse_and_its_log_det", "maf_forward_runs_the_conditioner_once",
                   "maf_shapes_dtypes_and_independence", "maf_gradients_reach_every_parameter",
                   "maf_log_scale_is_bounded"}),
        False,
    ),
    # --------------------------------------------------------------------------------- IAFLayer
    "iaf_inverse_loops": Bug(
        "IAFLayer",
        # Right numbers, but the fast direction runs the conditioner once per feature.
        _iaf(inverse_body="""columns = []
        for i in range(self.features):
            shift, log_scale = self.shift_and_log_scale(z)
            columns.append(z[:, i] * torch.exp(log_scale[:, i]) + shift[:, i])
        return torch.stack(columns, dim=1), log_scale.sum(dim=1)"""),
        frozenset({"iaf_inverse_runs_the_conditioner_once"}),
        False,
    ),
    "iaf_mask_sees_its_own_feature": Bug(
        "IAFLayer",
        _iaf(output_comparison=">="),
        frozenset({"iaf_log_det_matches_numerical_jacobian", "iaf_jacobian_is_triangular",
                   "iaf_inverse_and_its_log_det"}),
        True,
    ),
    "iaf_forward_scales_before_shifting": Bug(
        "IAFLayer",
        _iaf(forward_step="x * torch.exp(-log_scale) - shift"),  # mu must come off before the division
        frozenset({"iaf_inverse_and_its_log_det"}),
        True,
    ),
    "iaf_inverse_log_det_wrong_sign": Bug(
        "IAFLayer",
        _iaf(inverse_log_det="-log_scale.sum(dim=1)"),
        frozenset({"iaf_log_det_matches_numerical_jacobian", "iaf_inverse_and_its_log_det"}),
        True,
    ),
    "iaf_unbounded_log_scale": Bug(
        "IAFLayer",
        _iaf(log_scale="raw_log_scale"),
        frozenset({"iaf_log_scale_is_bounded"}),
        True,
    ),
    "iaf_log_det_detached": Bug(
        "IAFLayer",
        _iaf(inverse_log_det="log_scale.detach().sum(dim=1)"),
        frozenset({"iaf_gradients_reach_every_parameter"}),
        False,
    ),
    "iaf_borrows_course_pkgs_scale_clip": Bug(
        "IAFLayer",
        _iaf(log_scale=_BORROWED_CLIP),
        frozenset({"iaf_log_det_matches_numerical_jacobian", "iaf_jacobian_is_triangular",
                   "iaf_inverse_and_its_log_det", "iaf_inverse_runs_the_conditioner_once",
                   "iaf_shapes_dtypes_and_independence", "iaf_gradients_reach_every_parameter",
                   "iaf_log_scale_is_bounded"}),
        False,
    ),
}

# One bug per target: the "buggy student" of the grading-pipeline test. The MaskedLinear bug is one
# that MAFLayer and IAFLayer, built on it, do not notice, so each target loses only its own points.
ONE_BUG_PER_FUNCTION = ["masked_linear_mask_not_a_buffer", "maf_inverse_shifts_before_scaling", "iaf_inverse_loops"]
