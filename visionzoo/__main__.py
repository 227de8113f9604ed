"""``python -m visionzoo``: the ``visionzoo`` command line."""
import sys

try:
    from visionzoo.cli.main import main
except KeyboardInterrupt:  # Ctrl-C during start-up: the same exit code and line as later
    print("visionzoo: interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
