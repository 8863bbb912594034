"""``python -m airflow_provider_stepcab`` is the ``stepcab`` command."""

import sys

from .cli import main

sys.exit(main())
