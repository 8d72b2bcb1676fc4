"""``python -m realtime`` is the same as the ``talker`` command."""

from realtime.cli import main

raise SystemExit(main())
