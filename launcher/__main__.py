"""python -m launcher: the lguest command."""
import sys

from launcher.main import main

sys.exit(main())
