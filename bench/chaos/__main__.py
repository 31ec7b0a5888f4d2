"""`python -m bench.chaos`: see bench/chaos/run.py."""

from bench.chaos.run import main

raise SystemExit(main())
