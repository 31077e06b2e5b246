import sys

from dglsp.cli import main

sys.exit(main())
