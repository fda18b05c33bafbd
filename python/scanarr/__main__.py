import sys

from scanarr.cli import main

sys.exit(main())
