"""``python -m fastlif demo|check``: the same as the ``fastlif`` console script."""
import sys

from .cli import main

sys.exit(main())
