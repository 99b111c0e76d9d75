"""``python -m l2l.release``: the same as ``l2l release``."""

import sys

from l2l.release.cli import main

sys.exit(main())
