import sys

from driftless.cli import main

sys.exit(main())
