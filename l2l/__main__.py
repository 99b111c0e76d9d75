"""``python -m l2l``: the same as the ``l2l`` console script."""

import sys

from l2l.cli import main

sys.exit(main())
