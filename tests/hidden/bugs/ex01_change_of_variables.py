"""Deliberately wrong solutions of ex01, each with the checks it must fail (instructor-only).

The tests grade each one and require that it loses exactly these checks' points: a bug that
slips through, or one that costs the points of an unrelated check, fails the suite. Each source
is self-contained (it does not call the student's other functions), so that one function's bug
cannot leak into another's grade.
"""

from course_grading.bugs import Bug


BUGS = {
    "jacobian_transposed": Bug(
        "numerical_jacobian",
        '''
def numerical_jacobian(f, x, eps=1e-6):
    rows = []
    for j in range(x.numel()):
        step = torch.zeros_like(x)
        step[j] = eps
        rows.append((f(x + step) - f(x - step)) / (2 * eps))
    return torch.stack(rows, dim=0)  # column j stored as row j
''',
        frozenset({"jacobian_of_linear_maps", "jacobian_of_nonlinear_maps"}),
        True,
    ),
    "jacobian_ignores_eps": Bug(
        "numerical_jacobian",
        '''
def numerical_jacobian(f, x, eps=1e-6):
    columns = []
    for j in range(x.numel()):
        step = torch.zeros_like(x)
        step[j] = 1e-6  # the eps argument is never used
        columns.append((f(x + step) - f(x - step)) / (2 * 1e-6))
    return torch.stack(columns, dim=1)
''',
        frozenset({"jacobian_uses_central_differences_with_eps"}),
        False,
    ),
    "jacobian_delegates_to_course_pkg": Bug(
        "numerical_jacobian",
        '''
def numerical_jacobian(f, x, eps=1e-6):
    from course_pkg.testing import numerical_jacobian as reference
    return reference(f, x, eps)
''',
        frozenset({"jacobian_shape_dtype_and_input_untouched", "jacobian_of_linear_maps",
                   "jacobian_of_nonlinear_maps", "jacobian_uses_central_differences_with_eps"}),
        False,
    ),
    "log_det_without_absolute_value": Bug(
        "log_abs_det_jacobian",
        '''
def log_abs_det_jacobian(f, x):
    return torch.log(torch.linalg.det(torch.func.jacrev(f)(x)))  # NaN when det < 0
''',
        frozenset({"log_det_with_negative_determinants", "log_det_of_nonlinear_maps"}),
        True,
    ),
    "log_det_returns_determinant": Bug(
        "log_abs_det_jacobian",
        '''
def log_abs_det_jacobian(f, x):
    return torch.linalg.det(torch.func.jacrev(f)(x)).abs()  # forgot the log
''',
        frozenset({"log_det_of_volume_preserving_and_scaling_maps", "log_det_with_negative_determinants",
                   "log_det_of_nonlinear_maps"}),
        True,
    ),
    "log_prob_without_log_det": Bug(
        "flow_log_prob",
        '''
def flow_log_prob(forward, base_log_prob, x):
    return base_log_prob(forward(x))  # the volume change is missing
''',
        frozenset({"log_prob_of_a_gaussian_pushed_through_a_linear_map", "log_prob_through_nonlinear_maps"}),
        True,
    ),
    "log_prob_assumes_triangular_jacobian": Bug(
        "flow_log_prob",
        '''
def flow_log_prob(forward, base_log_prob, x):
    log_dets = []
    for sample in x:
        jacobian = torch.func.jacrev(lambda v: forward(v[None])[0])(sample)
        log_dets.append(torch.diagonal(jacobian).abs().log().sum())  # only right for triangular J
    return base_log_prob(forward(x)) + torch.stack(log_dets)
''',
        frozenset({"log_prob_of_a_gaussian_pushed_through_a_linear_map", "log_prob_through_nonlinear_maps"}),
        False,
    ),
    "log_prob_mixes_the_batch": Bug(
        "flow_log_prob",
        '''
def flow_log_prob(forward, base_log_prob, x):
    log_dets = torch.stack([
        torch.linalg.slogdet(torch.func.jacrev(lambda v: forward(v[None])[0])(sample)).logabsdet
        for sample in x
    ])
    return base_log_prob(forward(x)) + log_dets.mean()  # every sample gets the batch's average
''',
        frozenset({"log_prob_through_nonlinear_maps", "log_prob_keeps_samples_independent"}),
        False,
    ),
}

# One bug per function: the "buggy student" of the grading-pipeline test.
ONE_BUG_PER_FUNCTION = ["jacobian_transposed", "log_det_without_absolute_value", "log_prob_assumes_triangular_jacobian"]
