"""Exit codes and the exceptions commands raise to choose them (see docs/cli.md)."""
from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "Interrupted"]

EXIT_OK = 0  # done (also: the reader of stdout went away, e.g. `visionzoo list | head`)
EXIT_FAILED = 1  # the command ran and failed (unknown model, missing file, a failed check, ...)
EXIT_USAGE = 2  # bad command line (argparse's convention)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT: 128 + signal 2, what a shell reports for it


class Interrupted(KeyboardInterrupt):
    """Ctrl-C caught by a command; ``note`` says what was kept (printed on the one stderr line)."""

    def __init__(self, note: str = "") -> None:
        super().__init__(note)
        self.note = note
