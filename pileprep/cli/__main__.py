import sys

from pileprep.cli.main import main

sys.exit(main())
