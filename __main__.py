"""``python -m fabnode``: the same as the ``fabnode`` command."""

import sys

from fabnode.cli import main

sys.exit(main())
