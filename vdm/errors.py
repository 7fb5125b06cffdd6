"""User-facing errors and the CLI wrapper that turns them into one-line messages."""
from __future__ import annotations

import functools
import sys

import click


class VdmError(Exception):
    """A mistake the user can fix (bad file, bad flag, impossible shape). CLIs exit 2 with its text."""

    exit_code = 2


class TrainingDiverged(VdmError):
    """The loss became NaN/inf; the last good checkpoint is kept."""

    exit_code = 1


def cli_errors(fn):
    """Run a click command body; a VdmError becomes `error: ...` on stderr and its exit code.

    `--debug` (passed through as the `debug` keyword) re-raises so the traceback shows.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except VdmError as e:
            if debug:
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except OSError as e:  # the file system said no (permissions, a full disk, a name taken): one line too
            if debug:
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper
