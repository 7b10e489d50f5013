from gpkit.cli import main

raise SystemExit(main())
