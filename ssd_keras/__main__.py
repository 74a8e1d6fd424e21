"""`python -m ssd_keras <command>`: see `ssd_keras.cli`."""

import sys

from ssd_keras._environment import freeze_imported_objects
from ssd_keras.cli import main

if __name__ == "__main__":
    freeze_imported_objects()  # TensorFlow and Keras are imported by now
    sys.exit(main())
