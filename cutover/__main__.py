import sys

from cutover.cli import main

sys.exit(main())
