import sys

from broker.process import main

sys.exit(main())
