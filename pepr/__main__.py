import sys

from pepr.cli import main

sys.exit(main())
