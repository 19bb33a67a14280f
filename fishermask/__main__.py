import sys

from fishermask.cli import main

sys.exit(main())
