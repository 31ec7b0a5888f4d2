"""`python -m service` runs the interview-scorer command."""

from service.cli import main

raise SystemExit(main())
