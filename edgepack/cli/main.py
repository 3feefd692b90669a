"""The Typer app, its sub-commands, and the one place errors become messages and exit codes."""

from __future__ import annotations

import inspect
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from edgepack import __version__
from edgepack.cli import bench as bench_cli
from edgepack.cli import build as build_cli
from edgepack.cli import bundle as bundle_cli
from edgepack.cli import deploy as deploy_cli
from edgepack.cli import doctor as doctor_cli
from edgepack.cli import gate as gate_cli
from edgepack.cli import plan as plan_cli
from edgepack.cli import report as report_cli
from edgepack.cli import runtime as runtime_cli
from edgepack.cli import targets as targets_cli
from edgepack.cli.output import err_console
from edgepack.errors import (
    DEBUG_ENV,
    BadInputError,
    EdgepackError,
    ExitCode,
    debugging,
    set_debug,
)

COMMANDS: dict[str, Callable[..., object] | typer.Typer] = {
    "plan": plan_cli.plan,
    "build": build_cli.build,
    "bundle": bundle_cli.app,
    "bench": bench_cli.bench,
    "gate": gate_cli.gate,
    "deploy": deploy_cli.deploy,
    "rollback": deploy_cli.rollback,
    "report": report_cli.report,
    "doctor": doctor_cli.doctor,
    "targets": targets_cli.app,
    "runtime": runtime_cli.app,
}
"""The top-level commands (a function) and command groups (a Typer app), in --help's order."""


def reflowed(doc: str) -> str:
    """A docstring's paragraphs as single lines, for the terminal to wrap: Typer keeps the source's
    line breaks, which break mid-sentence in a narrower terminal. Paragraphs with indented or
    list lines keep theirs."""
    paragraphs = []
    for paragraph in inspect.cleandoc(doc).split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith((" ", "- ", "* ")) for line in lines):
            paragraphs.append(paragraph)
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        doc = command.help or (command.callback and command.callback.__doc__)
        if doc:
            command.help = reflowed(doc)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def _version(value: bool) -> None:
    if value:
        print(f"edgepack {__version__}")
        raise typer.Exit()


def _global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help=f"Show tracebacks (also ${DEBUG_ENV}=1).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
    insecure_host_keys: Annotated[
        bool,
        typer.Option(
            "--insecure-host-keys",
            help="Honour StrictHostKeyChecking no from ssh_config: connect whatever a device's "
            "host key (warned on every connection). Without it, no is checked as accept-new.",
        ),
    ] = False,
) -> None:
    from edgepack.remote.host_keys import allow_insecure

    set_debug(debug)
    allow_insecure(insecure_host_keys)


def make_app(only: str | None = None) -> typer.Typer:
    """The command line: every command, or only the one named ``only`` (``run`` makes that one
    when the command line names it: Click then inspects one command's options, not all 15)."""
    made = typer.Typer(
        name="edgepack",
        help="Take a Hugging Face LLM to an edge device and prove it works there.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for name, command in COMMANDS.items():
        if only in (None, name):
            if isinstance(command, typer.Typer):
                made.add_typer(command, name=name)
            else:
                made.command(name)(command)
    made.callback()(_global_options)
    _reflow_help(made)
    return made


app = make_app()


def _report(error: EdgepackError) -> int:
    if debugging():
        traceback.print_exc()
        if error.detail:
            sys.stderr.write(error.detail.rstrip("\n") + "\n")
    err_console.print(
        f"[bold red]error:[/] {escape(error.message)}", highlight=False, soft_wrap=True
    )
    if error.hint:
        err_console.print(f"[dim]hint:[/] {escape(error.hint)}", highlight=False, soft_wrap=True)
    return error.exit_code


def _internal_error(error: Exception) -> int:
    """An edgepack bug: say so, keep the traceback behind --debug."""
    if debugging():
        traceback.print_exc()
    err_console.print(f"[bold red]internal error:[/] {type(error).__name__}: {escape(str(error))}")
    err_console.print(f"[dim]hint:[/] rerun with --debug (or {DEBUG_ENV}=1) for the traceback")
    return ExitCode.FAILURE


def _path_error(error: OSError) -> EdgepackError:
    """The one line for a file operation that failed on a path no check caught first."""
    reason = error.strerror or type(error).__name__
    return BadInputError(
        f"{error.filename}: {reason.lower()}",
        hint="check the path and its permissions (--debug shows where it was used)",
    )


def _usage_error(error: typer.TyperException) -> int:
    """A usage error (a missing or malformed option, an unknown command) in edgepack's own form."""
    context = getattr(error, "ctx", None)
    where = context.command_path if context is not None else "edgepack"
    message = " ".join(error.format_message().split())
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    err_console.print(f"[dim]hint:[/] see `{where} --help`", highlight=False, soft_wrap=True)
    return error.exit_code


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a command the way Ctrl-C does (only the main thread can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted() -> int:
    err_console.print("[bold red]interrupted[/]: stopped; nothing half-done was kept in use")
    return ExitCode.INTERRUPTED


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status (tests call this).

    Click's standalone mode is off, so nothing prints "Aborted!" or exits on its own: usage
    errors are shown here, ``typer.Exit`` gives its code, Ctrl-C and SIGTERM exit 130 with one
    line, and edgepack's own errors become a message and their exit code.
    """
    set_debug(False)
    try:
        with _sigterm_interrupts():
            args = sys.argv[1:] if argv is None else argv
            chosen = make_app(args[0]) if args and args[0] in COMMANDS else app
            code = chosen(args=args, prog_name="edgepack", standalone_mode=False)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else ExitCode.FAILURE
    except typer.TyperException as error:  # usage errors: one line, and where the help is
        return _usage_error(error)
    except typer.Abort:
        return _interrupted()
    except EdgepackError as error:
        return _report(error)
    except KeyboardInterrupt:
        return _interrupted()
    except OSError as error:  # a path the command was given that cannot be read or written
        if error.filename is None:
            return _internal_error(error)
        return _report(_path_error(error))
    except Exception as error:
        return _internal_error(error)
    if code == ExitCode.INTERRUPTED:  # Typer turned a KeyboardInterrupt into Exit(130)
        return _interrupted()
    return code if isinstance(code, int) else ExitCode.OK
