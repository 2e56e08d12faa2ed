"""``python -m maggie.preset NAME``: apply a settings preset to params.yaml (see ``maggie.config.presets``)."""

import sys

from maggie.config.presets import main

if __name__ == "__main__":
    sys.exit(main())
