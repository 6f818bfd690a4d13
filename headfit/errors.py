"""The exceptions headfit raises for things a user can fix, and `explain`: the one place that turns any exception
into one of them (or says it is a bug).

Every message has three parts: what is wrong, where (config key, file:line or path), and how to fix it.
The command-line entry points print the message alone, without a traceback (set HYDRA_FULL_ERROR=1, or pass
--debug, to see one). An exception `explain` does not know is a bug: it keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
from pathlib import Path

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException


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

    def __reduce__(self):
        # Rebuilt with its keywords (and attributes such as errno), so it comes back whole from another process.
        state = {**self.__dict__, **({"errno": self.errno} if isinstance(self, OSError) else {})}
        return functools.partial(type(self), where=self.where, fix=self.fix), (self.problem,), state


class HeadfitConfigError(HeadfitError):
    """A config value (or a combination of values) that cannot work."""


class HeadfitDataError(HeadfitError):
    """A data file, row or batch that does not fit the task."""


class HeadfitCheckpointError(HeadfitError):
    """A file given as a checkpoint that is not a readable headfit checkpoint (or is refused as unsafe)."""


class HeadfitOutputError(HeadfitError, OSError):
    """A file or directory headfit could not write (no space, read-only, a file where a directory should be).
    Also an OSError (with the system's errno, when there is one), so `except OSError` still catches it."""


# How to fix what the operating system refused, by errno.
_OS_FIXES = {
    errno.ENOSPC: "free space on that disk, or write elsewhere (hydra.run.dir=..., --output, OUT_DIR), and run again",
    errno.EDQUOT: "free space within your disk quota, or write elsewhere, and run again",
    errno.EACCES: "make the directory writable for you, or write elsewhere",
    errno.EPERM: "make the directory writable for you, or write elsewhere",
    errno.EROFS: "that filesystem is read-only: write elsewhere",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: give another path",
    errno.EISDIR: "the path is a directory: give a file path",
    errno.EEXIST: "the path exists already: give another one",
}


def unwritable(path: str | Path, error: OSError, what: str = "", doing: str = "write",
               note: str = "") -> HeadfitOutputError:
    """'could not write <what> <path>: <the system's reason>[; note]' and the fix for that reason."""
    reason = error.strerror or str(error)
    refused = HeadfitOutputError(f"could not {doing} {what + ' ' if what else ''}{path}: {reason}"
                                 + (f"; {note}" if note else ""), where=str(path),
                                 fix=_OS_FIXES.get(error.errno, "check the path and the disk"))
    refused.errno = error.errno  # (not strerror and filename: OSError would print those instead of the message)
    return refused


def unreadable_checkpoint(path: str | Path, why: str) -> HeadfitCheckpointError:
    """'<path> is not a readable headfit checkpoint: <why in one line>'."""
    refused = why.startswith("refused")
    return HeadfitCheckpointError(
        f"{path} is not a readable headfit checkpoint: {why}", where=str(path),
        fix="if you trust this file and know what it runs, load it yourself with torch.load(weights_only=False); "
            "headfit reads checkpoints written by headfit-train" if refused else
            "give a .ckpt written by headfit-train (checkpoints/best.ckpt or last.ckpt); a file cut short (a full "
            "disk, an interrupted copy) must be copied or trained again")


def unsafe_globals(message: str) -> list[str]:
    """The Python objects torch's weights_only unpickler refused, named in its message (e.g. ['posix.system'])."""
    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", message)))


def chain(error: BaseException) -> list[BaseException]:
    """The error, then what caused it (`raise ... from`, or raised while handling), outermost first."""
    seen: list[BaseException] = []
    while error is not None and error not in seen and len(seen) < 20:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def explain(error: BaseException) -> HeadfitError | None:
    """`error` in three parts when it is the user's to fix; None when it is a bug (keep its traceback).

    Looks through the chain of causes, so a HeadfitError wrapped by Hydra's instantiate (or by Lightning) is
    found, as is the OSError ("No space left on device") under torch's "[enforce fail at inline_container.cc]".
    """
    links = chain(error)
    for link in links:
        if isinstance(link, HeadfitError):
            return link
    for link in links:
        if isinstance(link, MissingMandatoryValue):
            return HeadfitConfigError(f"{link.full_key} has no value", where=link.full_key,
                                      fix=f"set it on the command line: {link.full_key}=...")
        if isinstance(link, OmegaConfBaseException) and getattr(link, "full_key", None):
            problem = str(link).splitlines()[0]
            return HeadfitConfigError(f"the config cannot be read: {problem}", where=link.full_key,
                                      fix="check that key's value and spelling (python train.py --cfg job shows the "
                                          "composed config)")
    for link in links:
        if isinstance(link, OSError) and link.errno in _OS_FIXES:
            doing = "write" if link.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "open"
            return unwritable(link.filename, link, doing=doing) if link.filename else HeadfitOutputError(
                f"the operating system refused a file operation: {link.strerror}",
                where="a file headfit was reading or writing", fix=_OS_FIXES[link.errno])
    return None


def command_failed(command: str, error: BaseException, debug: bool = False) -> int:
    """What a command line does with an exception it caught: the user's mistake (`explain`) is printed on stderr as
    `<command>: <what  where  fix>` and the command exits 1; a bug, or any error with --debug or
    HYDRA_FULL_ERROR=1, is raised again with its traceback. Call it from the `except` block."""
    explained = explain(error)  # None: a bug, whose traceback is shown
    if explained is None or debug or os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"{command}: {explained}", file=sys.stderr)  # the user's to fix: what, where, how
    return 1
