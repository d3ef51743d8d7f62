import sys

from factorgym.cli import main

sys.exit(main())
