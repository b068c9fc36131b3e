"""``python -m simlab.devtools.bench``: the command line of :mod:`simlab.devtools.bench.command`."""

import sys

from simlab.devtools.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
