"""``python -m fastdw bench|params|viz|compare|check``: see ``python -m fastdw --help``."""
from fastdw.cli import main

raise SystemExit(main())
