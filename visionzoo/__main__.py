"""``python -m visionzoo``: the ``visionzoo`` command line."""
import sys

from visionzoo.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
