"""Shell completion (bash, zsh) through argcomplete, when it is installed.

Model names and ``arch.tag`` names come from the registry's JSON cfg files, so completing never
imports torch. Enable it with ``eval "$(register-python-argcomplete visionzoo)"`` (see docs/cli.md).
Without argcomplete every function here is a no-op and the command line works the same.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable

__all__ = ["model_completer", "family_completer", "set_completer", "autocomplete"]


def _complete_names(prefix: str, with_tags: bool) -> list[str]:
    """Architectures starting with ``prefix``; ``arch.`` + partial tag lists that arch's tags."""
    from ..registry import get_arch_pretrained_cfgs, is_model, list_models

    arch, dot, tag = prefix.partition(".")
    if dot:
        if not with_tags or not is_model(arch):
            return []
        return [f"{arch}.{t}" for t in get_arch_pretrained_cfgs(arch) if t.startswith(tag)]
    names = list_models(f"{prefix}*") if prefix else list_models()
    if with_tags and arch in names:  # a complete architecture name: offer its tags as well
        names += [f"{arch}.{t}" for t in get_arch_pretrained_cfgs(arch)]
    return names


def model_completer(with_tags: bool = True) -> Callable[..., list[str]]:
    """An argcomplete completer for architecture (and ``arch.tag``) names."""

    def complete(prefix: str, **_: Any) -> list[str]:
        return _complete_names(prefix, with_tags)

    return complete


def family_completer(prefix: str, **_: Any) -> list[str]:
    from ..registry import list_modules

    return [m for m in list_modules() if m.startswith(prefix)]


def set_completer(action: argparse.Action, completer: Callable[..., list[str]]) -> argparse.Action:
    """Attach ``completer`` to an argparse action (harmless without argcomplete)."""
    action.completer = completer  # type: ignore[attr-defined]
    return action


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer a shell's completion request and exit; return at once on a normal run.

    argcomplete is imported only while the shell asks for completions (``$_ARGCOMPLETE`` set), so
    a normal run pays nothing for it, and a missing argcomplete simply means no completion.
    """
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)
