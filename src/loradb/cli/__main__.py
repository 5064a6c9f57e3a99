"""`python -m loradb.cli`: the same as the `loradb` command."""

import sys

from loradb.cli.main import main

sys.exit(main())
