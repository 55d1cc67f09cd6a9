"""``python -m simulation``: the simulated-user loop (``simulation.cli``)."""

import sys

from simulation.cli import main

sys.exit(main())
