"""`python -m ssd_keras <command>`: see `ssd_keras.cli`."""

import sys

from ssd_keras.cli import main

if __name__ == "__main__":
    sys.exit(main())
