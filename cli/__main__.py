"""`python -m ncc.cli ...` is the `ncc` command."""

import sys

from ncc.cli.main import main

sys.exit(main())
