"""``python -m devstack dev|start|stop|status``."""

import sys

from devstack.cli import main

sys.exit(main())
