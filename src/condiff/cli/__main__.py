import sys

from condiff.cli import main

sys.exit(main())
