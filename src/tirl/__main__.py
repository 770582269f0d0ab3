"""``tirl`` and ``python -m tirl``: the project's command line (:mod:`tirl.commands`)."""

from __future__ import annotations

import sys

from tirl.commands import main

if __name__ == "__main__":
    sys.exit(main())
