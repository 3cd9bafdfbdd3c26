from .operate.cli import main

raise SystemExit(main())
