"""``python -m lmjax ...``: the same command as the ``lmjax`` console script (lmjax/cli.py)."""

import sys

from lmjax.cli import main

if __name__ == "__main__":
    sys.exit(main())
