import sys

from meterline.local.cli import main

sys.exit(main())
