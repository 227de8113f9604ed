"""``visionzoo`` command: dispatches to one module per sub-command, imported only when used."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# sub-command -> (module, one-line help); each module defines add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("visionzoo.cli.list_info", "list architectures or pretrained tags"),
    "info": ("visionzoo.cli.list_info", "show a model's parameters, features and pretrained cfgs"),
    "predict": ("visionzoo.cli.predict", "classify images with a pretrained model"),
    "benchmark": ("visionzoo.cli.benchmark", "measure params, GMACs, throughput and peak memory"),
    "select": ("visionzoo.cli.select", "pick a backbone for an accuracy / speed / memory budget"),
    "train": ("visionzoo.cli.train", "train or fine-tune on an image folder"),
    "validate": ("visionzoo.cli.validate", "evaluate a model on an image folder"),
    "export": ("visionzoo.cli.export", "export to ONNX, TorchScript or torch.export"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visionzoo", description="Image backbones: list, inspect, run, train, export.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            mod = importlib.import_module(module)
            getattr(mod, f"add_{name}_arguments", getattr(mod, "add_arguments", lambda _p: None))(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        parser = argparse.ArgumentParser(prog="visionzoo")
        parser.print_help() if command is None else None
        if command is not None:
            print(f"visionzoo: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        print("\ncommands:\n" + "\n".join(f"  {n:<10} {h}" for n, (_, h) in COMMANDS.items()))
        return 0
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[command][0])
    runner = getattr(module, f"run_{command}", getattr(module, "run", None))
    try:
        return int(runner(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, FileNotFoundError, TypeError) as e:
        print(f"visionzoo {command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
