"""``python -m tether.doctor``: the GPU check (see ``tether.doctor``)."""

import sys

from tether.doctor import main

sys.exit(main())
