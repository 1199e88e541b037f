import sys

from workers.process import main

sys.exit(main())
