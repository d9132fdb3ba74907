"""``python -m hlens.organism {train,eval,record}``; see :mod:`hlens.cli.organism`."""

import sys

from hlens.cli.organism import main

if __name__ == "__main__":
    sys.exit(main())
