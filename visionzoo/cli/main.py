# PYTHON_ARGCOMPLETE_OK  (argcomplete looks for this marker in the console script's module)
"""``visionzoo`` command: dispatches to one module per sub-command.

Building the parser imports only the small ``visionzoo.cli`` modules, which define their options
without importing torch; a command's heavy imports happen inside its ``run`` function. So
``visionzoo list``, ``--help``, ``--version`` and shell completion never load torch.

Exit codes (docs/cli.md): 0 done, 1 failed, 2 usage error, 130 interrupted (Ctrl-C). Errors are
one ``visionzoo: error: ...`` line on stderr; ``--debug`` or ``VISIONZOO_DEBUG=1`` adds the traceback.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
import traceback
from typing import NoReturn, Sequence

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Interrupted

# sub-command -> (module, one-line help); each module defines add_<name>_arguments(parser) (or
# add_arguments) and run_<name>(args) (or run) -> exit code
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("visionzoo.cli.list_info", "list architectures or pretrained tags"),
    "info": ("visionzoo.cli.list_info", "show a model's parameters, features and pretrained cfgs"),
    "predict": ("visionzoo.cli.predict", "classify images with a pretrained model"),
    "benchmark": ("visionzoo.cli.benchmark", "measure params, GMACs, throughput and peak memory"),
    "select": ("visionzoo.cli.select", "pick a backbone for an accuracy / speed / memory budget"),
    "train": ("visionzoo.cli.train", "train or fine-tune on an image folder"),
    "validate": ("visionzoo.cli.validate", "evaluate a model on an image folder"),
    "export": ("visionzoo.cli.export", "export to ONNX, TorchScript or torch.export"),
    "embed": ("visionzoo.cli.embed", "embed an image collection into Parquet / .npy (resumable, torchrun-ready)"),
    "similar": ("visionzoo.cli.similar", "nearest images and near-duplicate groups in an embedding file (faiss)"),
    "push-to-hub": ("visionzoo.cli.push_to_hub", "upload a saved model folder to the Hugging Face Hub"),
    "version": ("visionzoo.cli.version", "versions, platform, CPU features and accelerator (for bug reports)"),
}

# commands that run models call after call: the process keeps freed activation memory for the next
# one (visionzoo.deploy.allocator; eager 1.03-1.6x, benchmarks/results/process_speed.md)
_RUNS_MODELS = {"predict", "benchmark", "select", "train", "validate", "embed"}

# exception types whose message speaks for itself; others are prefixed with their type name
_PLAIN_ERRORS = (RuntimeError, ValueError, OSError, TypeError, ImportError)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: ``visionzoo: error: ... (see 'visionzoo list --help')``."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(EXIT_USAGE, f"visionzoo: error: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    from .. import __version__

    return f"visionzoo {__version__}"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one whose sub-command ``only`` alone has its options."""
    parser = _Parser(
        prog="visionzoo", description="Image backbones: list, inspect, run, train, export.",
        epilog="exit codes: 0 done, 1 failed, 2 usage error, 130 interrupted. See docs/cli.md.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (or set VISIONZOO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(_subparsers={})
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        parser.get_default("_subparsers")[name] = p
        if only is None or only == name:
            mod = importlib.import_module(module)
            getattr(mod, f"add_{name}_arguments", getattr(mod, "add_arguments", lambda _p: None))(p)
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _debug_requested(argv: Sequence[str]) -> bool:
    if os.environ.get("VISIONZOO_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
        return True
    head = list(argv[:argv.index("--")]) if "--" in argv else list(argv)
    return "--debug" in head


def _say(line: str) -> None:
    """One line on stderr; a closed stderr is ignored."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _one_line(e: BaseException) -> str:
    # errors may carry their command-line wording (e.g. '--checkpoint' for 'checkpoint_path=')
    lines = [s.strip() for s in str(getattr(e, "cli_message", None) or e).splitlines() if s.strip()]
    text = "; ".join(lines)
    if len(text) > 400:
        text = f"{lines[0][:400]} [{len(lines) - 1} more line(s); --debug shows all]"
    if not isinstance(e, _PLAIN_ERRORS) or not text:
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text


def _stdout_closed() -> bool:
    """True when stdout is a pipe / socket whose reader went away (POLLERR on Linux)."""
    try:
        import select

        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return True  # no poll() here or no real stdout: take the EPIPE to be stdout's


def _reader_gone() -> int:
    """`visionzoo ... | head`: stop quietly. Whatever is still buffered goes to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_OK


def _interrupted(e: KeyboardInterrupt, debug: bool, as_script: bool) -> int:
    if as_script:  # a second Ctrl-C while shutting down must not print a traceback either
        import signal

        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except (ValueError, OSError):
            pass
    if debug:
        traceback.print_exc()
    note = e.note if isinstance(e, Interrupted) else ""
    _say(f"visionzoo: interrupted{'; ' + note if note else ''}")
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse raises ``SystemExit(2)`` on bad options)."""
    as_script = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    try:
        return _main(argv, debug)
    except KeyboardInterrupt as e:
        return _interrupted(e, debug, as_script)
    except BrokenPipeError:
        if _stdout_closed():
            return _reader_gone()
        raise


def _main(argv: list[str], debug: bool) -> int:
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer and exit
        from .completion import autocomplete

        autocomplete(build_parser())
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is None:
        parser = build_parser()
        if any(a in ("-h", "--help", "--version") for a in argv):
            parser.parse_args(argv)  # prints and exits 0
        parser.print_help()
        return EXIT_OK
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _say(f"visionzoo: error: unknown command {command!r} (choose from {', '.join(COMMANDS)}){hint}")
        return EXIT_USAGE
    parser = build_parser(only=command)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the sub-command's parser, so that the hint names its --help
        args._subparsers[command].error(f"unrecognized arguments: {' '.join(extra)}")
    del args._subparsers
    module = importlib.import_module(COMMANDS[command][0])
    runner = getattr(module, f"run_{command}", getattr(module, "run", None))
    if command in _RUNS_MODELS:
        from ..deploy.allocator import tune_malloc

        tune_malloc()
    try:
        rc = int(runner(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return rc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BrokenPipeError as e:
        if _stdout_closed():
            raise
        return _failed(e, debug)
    except Exception as e:  # noqa: BLE001 - every error becomes one line and exit code 1
        return _failed(e, debug)


def _failed(e: Exception, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    hint = "" if debug or isinstance(e, _PLAIN_ERRORS) else " (--debug shows the traceback)"
    _say(f"visionzoo: error: {_one_line(e)}{hint}")
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
