"""Reading the files a user names (run results, prompt sets, gate configs): each way it can go
wrong is one line that names the file, and a validation error is its first problem (every problem
is the error's detail, shown with --debug)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import BadInputError

if TYPE_CHECKING:
    from pydantic import ValidationError


def read_user_text(path: Path, what: str, hint: str | None = None) -> str:
    """The text of ``path``, which the user gave as ``what`` ("run result", "prompt file")."""
    if path.is_dir():
        raise BadInputError(f"{what} {path} is a directory, not a file", hint=hint)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BadInputError(f"{what} {path} does not exist", hint=hint) from exc
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{what} {path} is not a UTF-8 text file", hint=hint) from exc
    except OSError as exc:
        raise BadInputError(f"cannot read {what} {path}: {exc.strerror or exc}", hint=hint) from exc


def first_problem(error: ValidationError | ValueError) -> str:
    """One line for a validation error: where and what its first problem is, and how many more."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return " ".join(str(error).split())
    problems = error.errors()
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"])
    text = f"{where}: {first['msg']}" if where else str(first["msg"])
    more = len(problems) - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''}: --debug lists them)"
    return text


def output_directory(path: Path, what: str) -> Path:
    """Make ``path``, a directory the user named for output (``what``: "--output"), if missing."""
    if path.exists() and not path.is_dir():
        raise BadInputError(
            f"{what} {path} is a file, not a directory", hint="give a directory (made if missing)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(
            f"cannot make {what} {path}: {exc.strerror or exc}",
            hint="give a directory you can write to",
        ) from exc
    return path


def write_user_text(path: Path, text: str, what: str) -> None:
    """Write ``text`` to ``path``, a file the user named for output (``what``: "--json-out")."""
    if path.is_dir():
        raise BadInputError(
            f"{what} {path} is a directory, not a file", hint=f"give a file name, e.g. {path}/x"
        )
    output_directory(path.parent, f"the directory of {what}")
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise BadInputError(
            f"cannot write {what} {path}: {exc.strerror or exc}",
            hint="give a path you can write to",
        ) from exc
