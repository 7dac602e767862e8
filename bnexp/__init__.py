"""bnexp: experiments that reproduce, measure and judge Batch Normalization pitfalls in TensorFlow/Keras."""

import time
from pathlib import Path

PROCESS_START = time.perf_counter()  # the package is imported first in every process: start-up cost reference

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
# configs/ and experiments/ sit beside the package (installed together, see pyproject.toml).
CONFIG_DIR = PACKAGE_DIR.parent / "configs"
