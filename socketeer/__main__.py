"""``python -m socketeer``: the ``socketeer`` command (see :mod:`socketeer.cli.main`)."""

import sys

from socketeer.cli.main import main

sys.exit(main())
