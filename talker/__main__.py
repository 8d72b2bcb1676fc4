from talker.cli import main

raise SystemExit(main())
