"""`python -m loomserver`: the same as the `loom` command."""
import sys

from .cli import main

sys.exit(main())
