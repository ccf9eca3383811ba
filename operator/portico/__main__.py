import sys

from portico.cli import main

sys.exit(main())
