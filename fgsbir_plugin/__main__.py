import sys

from fgsbir_cli import main

sys.exit(main())
