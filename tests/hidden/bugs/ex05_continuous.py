"""Deliberately wrong solutions of ex05, each with the checks it must fail (instructor-only).

The tests grade each one and require that it loses exactly these checks' points: a bug that
slips through, or one that costs the points of an unrelated check, fails the suite. Each source
defines its whole function. The divergences are written with ``torch.autograd.grad`` (the notebook's
solution uses ``torch.func.vjp``), so the checks are seen to accept both; ``cnf_forward`` uses the
notebook's ``exact_divergence``, which the bugs below leave correct.
"""

from course_grading.bugs import Bug


def _fill(template: str, reference: dict[str, str], changes: dict[str, str]) -> str:
    """``template`` with its placeholders filled, and those that the filled-in text brings along."""
    values = {**reference, **changes}
    filled = template.format(**values)
    return filled.format(**values) if "{" in filled else filled


# Each target is written once with placeholders; a bug is the reference with one or two of them changed.
_EXACT = '''
def exact_divergence(f, t, z):
    z = z if z.requires_grad else z.detach().requires_grad_(True)
    with torch.enable_grad():
        velocity = f(t, z)
        {trace}
'''
_EXACT_REFERENCE = dict(
    trace="""columns = [torch.autograd.grad(velocity[:, i].sum(), z, {create_graph}retain_graph=True)[0][:, i]
                   for i in range(z.shape[1])]
        return torch.stack(columns, dim=1).sum(dim=1)""",
    create_graph="create_graph=True, ",
)


def _exact(**changes: str) -> str:
    return _fill(_EXACT, _EXACT_REFERENCE, changes)


_HUTCHINSON = '''
def hutchinson_divergence(f, t, z, noise):
    z = z if z.requires_grad else z.detach().requires_grad_(True)
    with torch.enable_grad():
        velocity = f(t, z)
        {estimate}
'''
_HUTCHINSON_REFERENCE = dict(
    estimate="""(row,) = torch.autograd.grad(velocity, z, {pulled_back}, {create_graph})
        return {product}""",
    pulled_back="noise",
    create_graph="create_graph=True",
    product="(row * noise).sum(dim=1)",
)


def _hutchinson(**changes: str) -> str:
    return _fill(_HUTCHINSON, _HUTCHINSON_REFERENCE, changes)


_CNF = '''
def cnf_forward(f, x, t0=0.0, t1=1.0, steps=20):
    def augmented(t, z):
        return f(t, z), exact_divergence(f, t, z)

    h = (t1 - t0) / {steps}
    z, log_det = x, x.new_zeros(x.shape[0])
    for k in range(steps):
        t = torch.tensor(t0 + k * h, dtype=x.dtype)
        k1 = augmented(t, z)
        k2 = augmented({mid_time}, z + h / 2 * k1[0])
        k3 = augmented({mid_time}, z + h / 2 * k2[0])
        k4 = augmented({end_time}, z + h * k3[0])
        z = z + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        log_det = log_det {log_det_step}
    return z, log_det
'''
_CNF_REFERENCE = dict(
    steps="steps",
    mid_time="t + h / 2",
    end_time="t + h",
    log_det_step="+ h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])",
)


def _cnf(**changes: str) -> str:
    return _fill(_CNF, _CNF_REFERENCE, changes)


BUGS = {
    # ------------------------------------------------------------------------- exact_divergence
    "exact_summed_over_the_batch": Bug(
        "exact_divergence",
        # The batch's total divergence, the same number for every sample.
        _exact(trace="""columns = [torch.autograd.grad(velocity[:, i].sum(), z, create_graph=True, retain_graph=True)[0][:, i]
                   for i in range(z.shape[1])]
        return torch.stack(columns, dim=1).sum().expand(z.shape[0])"""),
        frozenset({"exact_divergence_matches_numerical_jacobian", "exact_divergence_shapes_and_independence"}),
        True,
    ),
    "exact_sums_every_entry_of_the_jacobian": Bug(
        "exact_divergence",
        # The gradient of sum_i f_i is the column sums of J: right for diagonal Jacobians only.
        _exact(trace="""(columns,) = torch.autograd.grad(velocity.sum(), z, create_graph=True)
        return columns.sum(dim=1)"""),
        frozenset({"exact_divergence_matches_numerical_jacobian"}),
        True,
    ),
    "exact_trace_of_jt_j": Bug(
        "exact_divergence",
        # sum_i |e_i^T J|^2 = tr(J^T J), the squared Frobenius norm, not the trace.
        _exact(trace="""rows = [torch.autograd.grad(velocity[:, i].sum(), z, create_graph=True, retain_graph=True)[0]
                for i in range(z.shape[1])]
        return sum(row.pow(2).sum(dim=1) for row in rows)"""),
        frozenset({"exact_divergence_matches_numerical_jacobian"}),
        True,
    ),
    "exact_without_create_graph": Bug(
        "exact_divergence",
        # Right numbers, but detached from the field's parameters: training would ignore the log-det.
        _exact(create_graph=""),
        frozenset({"exact_divergence_is_differentiable"}),
        False,
    ),
    # -------------------------------------------------------------------- hutchinson_divergence
    "hutchinson_noise_on_one_side": Bug(
        "hutchinson_divergence",
        _hutchinson(product="row.sum(dim=1)"),  # sum_j (noise^T J)_j: the noise is missing on the right
        frozenset({"hutchinson_exact_for_a_fixed_noise", "hutchinson_is_unbiased"}),
        True,
    ),
    "hutchinson_draws_its_own_noise": Bug(
        "hutchinson_divergence",
        # Unbiased, but not the estimate for the noise it was given (FFJORD fixes the noise per solve):
        # a new draw on every call, so no two calls agree, for the other samples nor for finite differences.
        _hutchinson(estimate="""eps = torch.randn_like(z)
        (row,) = torch.autograd.grad(velocity, z, eps, create_graph=True)
        return (row * eps).sum(dim=1)"""),
        frozenset({"hutchinson_exact_for_a_fixed_noise", "hutchinson_shapes_and_independence",
                   "hutchinson_is_differentiable"}),
        True,
    ),
    "hutchinson_d_backward_passes": Bug(
        "hutchinson_divergence",
        # Right numbers from the whole Jacobian, one backward pass per feature: D times the work.
        _hutchinson(estimate="""rows = [torch.autograd.grad(velocity[:, i].sum(), z, create_graph=True, retain_graph=True)[0]
                for i in range(z.shape[1])]
        jacobian = torch.stack(rows, dim=1)
        return torch.einsum("bi,bij,bj->b", noise, jacobian, noise)"""),
        frozenset({"hutchinson_takes_one_vector_jacobian_product"}),
        False,
    ),
    "hutchinson_forms_the_jacobian_with_jacrev": Bug(
        "hutchinson_divergence",
        # Right numbers from torch.func.jacrev: D vector-Jacobian products at once, under vmap.
        _hutchinson(estimate="""jacobian = torch.func.vmap(torch.func.jacrev(lambda v: f(t, v[None])[0]))(z)
        return torch.einsum("bi,bij,bj->b", noise, jacobian, noise)"""),
        frozenset({"hutchinson_takes_one_vector_jacobian_product"}),
        False,
    ),
    "hutchinson_without_create_graph": Bug(
        "hutchinson_divergence",
        _hutchinson(create_graph="create_graph=False"),
        frozenset({"hutchinson_is_differentiable"}),
        False,
    ),
    # ------------------------------------------------------------------------------ cnf_forward
    "cnf_log_det_wrong_sign": Bug(
        "cnf_forward",
        # log|det dz/dx| = +int tr(df/dz) dt in the normalizing direction.
        _cnf(log_det_step="- h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])"),
        frozenset({"cnf_forward_log_det_matches_numerical_jacobian", "cnf_forward_solves_a_linear_time_dependent_field"}),
        True,
    ),
    "cnf_log_det_by_euler": Bug(
        "cnf_forward",
        _cnf(log_det_step="+ h * k1[1]"),  # the state by RK4, its log-det by Euler: an O(h) error
        frozenset({"cnf_forward_log_det_matches_numerical_jacobian", "cnf_forward_solves_a_linear_time_dependent_field"}),
        True,
    ),
    "cnf_stages_at_the_start_of_the_step": Bug(
        "cnf_forward",
        _cnf(mid_time="t", end_time="t"),  # every stage at t_k: the time is not advanced within a step
        frozenset({"cnf_forward_state_is_rk4", "cnf_forward_solves_a_linear_time_dependent_field"}),
        True,
    ),
    "cnf_steps_off_by_one": Bug(
        "cnf_forward",
        _cnf(steps="(steps + 1)"),  # h = (t1 - t0) / (steps + 1): the integration stops at t1 - h
        frozenset({"cnf_forward_state_is_rk4", "cnf_forward_solves_a_linear_time_dependent_field"}),
        True,
    ),
}

# One bug per target: the "buggy student" of the grading-pipeline test. The exact_divergence bug is
# one that cnf_forward, built on it, does not notice (its checks take no gradients), so each target
# loses only its own points.
ONE_BUG_PER_FUNCTION = ["exact_without_create_graph", "hutchinson_d_backward_passes", "cnf_log_det_wrong_sign"]
