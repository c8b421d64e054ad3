"""`python -m nas.cli` (torchrun runs the CLI this way)."""

import sys

from nas.cli.main import main

sys.exit(main())
