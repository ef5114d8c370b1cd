"""Runs the hidden checks of an exercise on a student's objects and turns them into points.

Instructor-only: this folder never reaches students. Each exercise module in this folder
registers its checks with :func:`check`; the hidden part of an autograder cell calls
:func:`grade`, which prints one line per check (its name, points and, on failure, the message
saying which invariant broke and by how much) and returns the points earned. The cell's last
expression is that number, which nbgrader reads as partial credit.

Every check runs seeded, under a time limit, with the student's output and warnings captured
(anything on stderr would cost a correct student the cell), and with calls into the reference
implementations of ``course_pkg`` refused.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import random
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import CodeType, FunctionType

import numpy as np
import torch

# Seconds one check may take; an instructor can change it for a slow machine.
TIME_LIMIT_SECONDS = float(os.environ.get("COURSE_CHECK_TIME_LIMIT", "20"))


@dataclass(frozen=True)
class Check:
    """One hidden check: ``run(implementation)`` raises ``AssertionError`` when it fails."""

    name: str
    target: str
    points: float
    run: Callable[[object], None]
    description: str


@dataclass
class Outcome:
    check: Check
    passed: bool
    message: str = ""

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


class CheckTimeout(BaseException):
    """Raised by the timer; a BaseException so that a student's `except Exception` cannot swallow it."""


class DelegationRefused(Exception):
    """A check ran course_pkg's reference implementation of what the student was to write."""


def load(assignment: str) -> Registry:
    """The registry of ``tests/hidden/<assignment>.py``."""
    return importlib.import_module(assignment).REGISTRY


def run_check(check: Check, implementation: object, forbidden: list[Callable] = ()) -> Outcome:
    """Run one check in isolation from the student's side effects; never raises."""
    seed_everything(0)
    try:
        with _quiet(), _time_limit(TIME_LIMIT_SECONDS), _refusing_calls_to(forbidden):
            check.run(implementation)
    except AssertionError as failure:
        return Outcome(check, False, _first_line(failure) or "an assertion failed")
    except CheckTimeout:
        return Outcome(check, False, f"took longer than {TIME_LIMIT_SECONDS:g} s and was stopped")
    except DelegationRefused as refusal:
        return Outcome(check, False, str(refusal))
    except Exception as error:  # the student's code raised: report it, grade the rest
        return Outcome(check, False, f"your code raised {type(error).__name__}: {_first_line(error)}")
    return Outcome(check, True)


def grade(assignment: str, target: str, namespace: dict) -> float:
    """Grade ``namespace[target]`` against the hidden checks of ``target``; print a report, return points.

    This runs the checks in the calling process, as when the instructor runs a source notebook.
    Under ``nbgrader autograde`` the course's configuration grades every check cell outside the
    student's kernel instead (``outside_kernel.py``), with the same checks and the same report.
    """
    registry = load(assignment)
    checks = registry.checks_of(target)
    if target not in namespace:
        outcomes = [Outcome(c, False, f"no object named {target!r} was defined") for c in checks]
    else:
        forbidden = registry.forbidden.get(target, [])
        outcomes = [run_check(c, namespace[target], forbidden) for c in checks]
    print(report(target, outcomes))
    return sum(o.points for o in outcomes)


def report(target: str, outcomes: list[Outcome]) -> str:
    """One line per check: its invariant, the points it earned and, on failure, why."""
    earned = sum(o.points for o in outcomes)
    total = sum(o.check.points for o in outcomes)
    lines = [f"Hidden checks of {target}: {earned:g} of {total:g} points"]
    for outcome in outcomes:
        mark = "passed" if outcome.passed else "FAILED"
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


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise CheckTimeout()

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
        + f"        __import__('grader').DELEGATION_CALLS.append({name!r})\n"
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
