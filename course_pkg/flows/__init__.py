"""Flow layers. Every layer follows the direction contract of :class:`Flow`."""

from course_pkg.flows.base import Flow, Inverse, Sequential, sum_except_batch

__all__ = ["Flow", "Inverse", "Sequential", "sum_except_batch"]
