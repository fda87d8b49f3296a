"""``python -m captum_daam``: the ``captum-daam`` command line.

Example::

    $ python -m captum_daam demo --out daam-demo
"""

from .cli import main

raise SystemExit(main())
