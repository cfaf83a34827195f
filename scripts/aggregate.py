"""python scripts/aggregate.py SWEEP_DIR... [--out DIR] [--wandb]: Table 2 from a sweep's runs.

The same as the ``sdexp-table`` command; see ``sdexp/table.py``.
"""

import sys

from sdexp.table import main

if __name__ == "__main__":
    sys.exit(main())
