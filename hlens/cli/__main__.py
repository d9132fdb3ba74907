"""``python -m hlens.cli``: the same as the ``hlens`` command."""

from hlens.cli import main

raise SystemExit(main())
