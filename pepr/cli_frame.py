"""The frame around both commands, `pepr` and `pepr-agent`: how a run ends and what it says.

Exit codes: 0 success; 2 bad input or usage (a `PeprError`: one line naming the flag, file,
row or column); 1 anything unexpected (one line; the traceback only with `--debug` or
PEPR_DEBUG=1); 130 interrupted (Ctrl-C), 143 by SIGTERM (scancel, timeout); 141 when the reader of the output went away (as
`| head` does), silently. A `PeprError` may carry another code (a busy database, a failed
download: 1).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from pepr.errors import PeprError, check_name, one_line

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "PEPR_DEBUG"
EXIT_BROKEN_PIPE = 128 + 13  # killed by SIGPIPE, as other Unix tools report it


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are `PeprError`s (one line, exit 2), with `--debug`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not any(DEBUG_FLAG in action.option_strings for action in self._actions):  # a parent's
            self.add_argument(DEBUG_FLAG, action="store_true", default=argparse.SUPPRESS,
                              help=f"print the traceback of an unexpected error (or set {DEBUG_VARIABLE}=1)")

    def error(self, message: str):
        raise PeprError(f"{message} (see {self.prog} --help)")


def label(text: str) -> str:
    """An argparse type: a name given on the command line, not blank, with no control character."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"a label: empty ({text!r})")
    try:
        return check_name(text, "a label")
    except PeprError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def debugging(argv: Sequence[str]) -> bool:
    """Whether a traceback was asked for: `--debug` before any `--`, or PEPR_DEBUG set (not 0)."""
    flags = list(argv)[: list(argv).index("--")] if "--" in argv else argv
    return DEBUG_FLAG in flags or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


class Terminated(BaseException):
    """SIGTERM arrived (outside a sweep, which handles it itself)."""


_signalled: list[int] = []  # the signals that arrived during the current command


def _on_signal(signum, frame):
    _signalled.append(signum)
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def run_command(prog: str, body: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run `body(argv)` (argv defaults to the command line) and turn how it ends into an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    main_thread = threading.current_thread() is threading.main_thread()  # where handlers go
    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    _signalled.clear()
    try:
        code = body(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except SystemExit as stop:  # --help, --version
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except PeprError as error:
        _say(prog, str(error))
        return error.exit_code
    except KeyboardInterrupt:
        return _interrupted(prog, signal.SIGINT)
    except Terminated:
        return _interrupted(prog, signal.SIGTERM)
    except Exception as error:  # a bug: one line, and exit 1
        if _signalled:  # DuckDB turns a signal during a query into "Query interrupted"
            return _interrupted(prog, _signalled[-1])
        if debugging(argv):
            traceback.print_exc()
        hint = "" if debugging(argv) else f" (rerun with {DEBUG_FLAG} for the traceback)"
        _say(prog, f"unexpected error: {type(error).__name__}: {error}{hint}")
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupted(prog: str, signum: int) -> int:
    _say(prog, "interrupted" if signum == signal.SIGINT else "interrupted by SIGTERM")
    return 128 + signum


def _say(prog: str, message: str) -> None:
    try:
        print(f"{prog}: {one_line(message)}", file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):  # stderr closed too: nothing left to tell
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (captured in a test)
        pass
