import sys

from iclebm.cli import main

sys.exit(main())
