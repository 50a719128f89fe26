import sys

from cutover.sandbox.serve import main

sys.exit(main())
