"""Allow `python -m dpmra ...`."""

from dpmra.cli import main

raise SystemExit(main())
