"""`python -m lru_keras.cli ...`: the same as `lru-keras ...`."""

import sys

from lru_keras.cli import main

sys.exit(main())
