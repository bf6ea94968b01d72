import sys

from blm.cli import main

sys.exit(main())
