"""Train ERM / IRM / V-REx / Fishr on Colored MNIST: the same as ``landscape train``.

Run ``python train_fishr.py --help`` for the options (they default to the Fishr paper's
Colored MNIST protocol).
"""

import sys

from landscape.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
