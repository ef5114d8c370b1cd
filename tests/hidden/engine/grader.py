"""Runs the hidden checks of an exercise on a student's objects and turns them into points.

Instructor-only: this package never reaches students. Each assignment's module in ``checks/``
registers its checks with :meth:`Registry.check`; the hidden part of an autograder cell calls
:func:`grade`, which prints one line per check (its name, points and, on failure, the message
saying which invariant broke and by how much) and returns the points earned. The cell's last
expression is that number, which nbgrader reads as partial credit.

Every check runs seeded, with the student's output and warnings captured (anything on stderr
would cost a correct student the cell), and with calls into the reference implementations of
``course_pkg`` refused. How each ended is a :class:`Status`. Under autograde the check server
(``check_server.py``) runs each check in a forked process of its own, with the time limit.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from types import CodeType, FunctionType

import numpy as np
import torch



@dataclass(frozen=True)
class Check:
    """One hidden check: ``run(implementation)`` raises ``AssertionError`` when it fails."""

    name: str
    target: str
    points: float
    run: Callable[[object], None]
    description: str


class Status(str, Enum):
    """How one check ended: a value that travels from where it arises (the grader, the check server)
    through autograde (the graded notebook's cell metadata) to the batch summary."""

    PASSED = "passed"
    FAILED = "failed"  # an invariant did not hold
    ERROR = "error"  # the student's code raised
    MISSING = "missing"  # the object to grade was never defined
    DELEGATED = "delegated"  # it called course_pkg's reference implementation
    TAMPERED = "tampered"  # it replaced part of torch, numpy, the self-checks or the grader
    TIMEOUT = "timeout"  # it overran its time and was stopped
    CRASHED = "crashed"  # the process running it died
    GRADER_FAILED = "grader failed"  # the grader itself failed: a bug of ours, never the student's


# The cell metadata key under which a graded notebook records how each check of a cell ended.
STATUS_KEY = "course_grading_statuses"

# The worst status of a submission is the one a batch summary shows: the order says which is worse.
SEVERITY = [Status.PASSED, Status.FAILED, Status.ERROR, Status.MISSING, Status.DELEGATED, Status.TIMEOUT,
            Status.CRASHED, Status.TAMPERED, Status.GRADER_FAILED]


def worst(statuses) -> Status:
    return max((Status(s) for s in statuses), key=SEVERITY.index, default=Status.PASSED)


@dataclass
class Outcome:
    check: Check
    status: Status
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    @property
    def points(self) -> float:
        return self.check.points if self.passed else 0.0


@dataclass
class Registry:
    """The checks of one exercise and the reference code a submission may not call."""

    checks: list[Check] = field(default_factory=list)
    forbidden: dict[str, list[Callable]] = field(default_factory=dict)

    def check(self, target: str, points: float = 1.0) -> Callable[[Callable], Callable]:
        """Decorator: register ``function(implementation)`` as a hidden check of ``target``."""

        def register(function: Callable) -> Callable:
            description = (function.__doc__ or function.__name__).strip().splitlines()[0]
            self.checks.append(Check(function.__name__, target, points, function, description))
            return function

        return register

    def checks_of(self, target: str) -> list[Check]:
        return [c for c in self.checks if c.target == target]


class DelegationRefused(Exception):
    """A check ran course_pkg's reference implementation of what the student was to write."""


def load_module(assignment: str):
    """The module of the assignment's hidden checks, ``checks/<assignment>.py``."""
    return importlib.import_module(f"course_grading.checks.{assignment}")


def load(assignment: str) -> Registry:
    """The registry of the assignment's hidden checks."""
    return load_module(assignment).REGISTRY


def run_check(check: Check, implementation: object, forbidden: list[Callable] = ()) -> Outcome:
    """Run one check, seeded and quiet, with calls to ``forbidden`` refused; never raises.

    Isolation (a process of its own, a time limit, undoing what the student's code replaced) is
    the check server's: it runs each check in a forked child.
    """
    seed_everything(0)
    try:
        with _quiet(), _refusing_calls_to(forbidden):
            check.run(implementation)
    except AssertionError as failure:
        return Outcome(check, Status.FAILED, _first_line(failure) or "an assertion failed")
    except DelegationRefused as refusal:
        return Outcome(check, Status.DELEGATED, str(refusal))
    except Exception as error:  # the student's code raised: report it, grade the rest
        return Outcome(check, Status.ERROR, f"your code raised {type(error).__name__}: {_first_line(error)}")
    return Outcome(check, Status.PASSED)


def grade(assignment: str, target: str, namespace: dict) -> float:
    """Grade ``namespace[target]`` against the hidden checks of ``target``; print a report, return points.

    This runs the checks in the calling process, as when the instructor runs a source notebook.
    Under ``nbgrader autograde`` the course's configuration grades every check cell outside the
    student's kernel instead (``outside_kernel.py``), with the same checks and the same report.
    """
    registry = load(assignment)
    checks = registry.checks_of(target)
    if target not in namespace:
        outcomes = [Outcome(c, Status.MISSING, missing(target)) for c in checks]
    else:
        forbidden = registry.forbidden.get(target, [])
        outcomes = [run_check(c, namespace[target], forbidden) for c in checks]
    print(report(target, outcomes))
    return sum(o.points for o in outcomes)


def missing(target: str) -> str:
    return f"no object named {target!r} was defined"


def report(target: str, outcomes: list[Outcome]) -> str:
    """One line per check: how it ended (its :class:`Status`), its invariant, the points it earned and,
    on failure, why."""
    earned = sum(o.points for o in outcomes)
    total = sum(o.check.points for o in outcomes)
    lines = [f"Hidden checks of {target}: {earned:g} of {total:g} points"]
    for outcome in outcomes:
        mark = outcome.status.value if outcome.passed else outcome.status.value.upper()
        lines.append(f"  [{mark}] {outcome.check.description} ({outcome.points:g}/{outcome.check.points:g})")
        if outcome.message:
            lines.append(f"           {outcome.message}")
    return "\n".join(lines)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow the student's prints and warnings: stderr output would zero the cell in nbgrader."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


DELEGATION_CALLS: list[str] = []  # filled by the tripwires below


@contextlib.contextmanager
def _refusing_calls_to(forbidden: list[Callable]) -> Iterator[None]:
    """Fail the check if any of the ``forbidden`` reference functions runs while it does.

    Each forbidden function's code is swapped for a tripwire that records the call and raises,
    so the refusal holds however the student reached the function (an alias, a subclass, a
    stored reference) and costs nothing while the student's own code runs.
    """
    functions = _functions_of(forbidden)
    originals = {function: function.__code__ for function in functions}
    tripwires = {function: _tripwire(function) for function in functions}
    DELEGATION_CALLS.clear()
    for function, code in tripwires.items():
        function.__code__ = code
    try:
        yield
        if any(function.__code__ is not code for function, code in tripwires.items()):
            DELEGATION_CALLS.append("a reference implementation whose code it swapped back")
    except BaseException:
        if not DELEGATION_CALLS:
            raise
    finally:
        for function, code in originals.items():
            function.__code__ = code
    if DELEGATION_CALLS:
        raise DelegationRefused(
            f"your code calls {DELEGATION_CALLS[0]}: the exercise asks you to write it yourself, "
            "without course_pkg's reference implementation"
        )


def _tripwire(function: FunctionType) -> CodeType:
    """Code with ``function``'s free variables (so it can stand in for it) that records a call and raises."""
    name = f"{function.__module__}.{function.__qualname__}"
    free = function.__code__.co_freevars
    source = (
        "def outer():\n"
        + "".join(f"    {var} = None\n" for var in free)
        + "    def tripwire(*args, **kwargs):\n"
        + (f"        ({', '.join(free)},)\n" if free else "")
        + f"        __import__('sys').modules['course_grading.engine.grader'].DELEGATION_CALLS.append({name!r})\n"
        + f"        raise RuntimeError('calls to {name} are refused in this exercise')\n"
        + "    return tripwire\n"
    )
    namespace: dict = {}
    exec(compile(source, "<tripwire>", "exec"), namespace)
    return namespace["outer"]().__code__


def _functions_of(items: list[Callable]) -> list[FunctionType]:
    """The functions in ``items``, and every function defined in the classes among them."""
    functions = []
    for item in items:
        members = vars(item).values() if isinstance(item, type) else [item]
        for member in members:
            member = getattr(member, "__func__", getattr(member, "fget", member))
            if isinstance(member, FunctionType):
                functions.append(member)
    return functions
