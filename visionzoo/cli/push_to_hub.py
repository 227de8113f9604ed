"""``visionzoo push-to-hub DIR ORG/NAME``: upload a hub-layout folder to the Hugging Face Hub."""
from __future__ import annotations

import argparse
import json

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR",
                   help="a folder written by visionzoo.save_pretrained, or a training run folder (its model/)")
    p.add_argument("repo_id", metavar="ORG/NAME", help="Hub repository, created if missing")
    p.add_argument("--private", action="store_true", default=None, help="create the repository as private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the token of `hf auth login`)")
    p.add_argument("--commit-message", default="Add model (visionzoo)", help="message of the upload commit")
    p.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..pretrained.hub import push_to_hub

    result = push_to_hub(args.folder, args.repo_id, private=args.private, token=args.token,
                         commit_message=args.commit_message, revision=args.revision, create_pr=args.create_pr)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"uploaded {', '.join(result['files'])} from {result['folder']} to {result['repo_id']}")
        print(result["commit_url"])
    return 0
