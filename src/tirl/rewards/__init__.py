"""Public reward API: ``from tirl.rewards import exact_match, length_aware_bleu``.

A stable re-export of :mod:`tirl.core.rewards` for users and notebooks.
"""

from tirl.core.rewards import *  # noqa: F401,F403
from tirl.core.rewards import __all__  # noqa: F401
