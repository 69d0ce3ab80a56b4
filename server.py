"""Loom's server and command line, run from a checkout: `python server.py [serve|run|workflow] ...`.

The command line lives in loomserver/cli.py; an installed Loom has it as the `loom` command.
"""
import sys

from loomserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
