"""Reference implementations for the course *Normalizing Flows*.

The book imports this package; it never imports the book. Students have it too: nothing in it
gives away a graded exercise's hidden checks.
"""

from course_pkg.devices import default_device
from course_pkg.distributions import NormalizingFlow, StandardNormal
from course_pkg.flows import Flow, Inverse, Sequential

__all__ = ["Flow", "Inverse", "NormalizingFlow", "Sequential", "StandardNormal", "default_device"]
