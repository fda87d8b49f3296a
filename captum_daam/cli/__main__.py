"""``python -m captum_daam.cli``, as ``torchrun -m captum_daam.cli`` launches it."""

import sys

from . import main

sys.exit(main())
