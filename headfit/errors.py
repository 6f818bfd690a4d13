"""The exceptions headfit raises for things a user can fix.

Every message has three parts: what is wrong, where (config key or file:line), and how to fix it.
The command-line entry points print the message alone, without a traceback (set HYDRA_FULL_ERROR=1
to see one).
"""

from __future__ import annotations


class HeadfitError(ValueError):
    """Base class: a problem in the user's config or data, explained in words."""

    def __init__(self, problem: str, *, where: str | None = None, fix: str | None = None):
        self.problem, self.where, self.fix = problem, where, fix
        lines = [problem]
        if where:
            lines.append(f"  where: {where}")
        if fix:
            lines.append(f"  fix:   {fix}")
        super().__init__("\n".join(lines))


class HeadfitConfigError(HeadfitError):
    """A config value (or a combination of values) that cannot work."""


class HeadfitDataError(HeadfitError):
    """A data file, row or batch that does not fit the task."""
