"""``python -m hlens.organism {train,eval,record}``; see :mod:`hlens.organism.cli`."""

import sys

from hlens.organism.cli import main

if __name__ == "__main__":
    sys.exit(main())
