"""``python -m socketeer``: the ``socketeer`` command (see :mod:`socketeer.cli`)."""

import sys

from socketeer.cli import main

sys.exit(main())
