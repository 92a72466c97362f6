"""``python -m microcontainer_tool`` runs the CLI."""

import sys

from microcontainer_tool.cli import main

if __name__ == "__main__":
    sys.exit(main())
