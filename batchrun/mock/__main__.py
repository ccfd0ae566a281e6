"""`python -m batchrun.mock`: run the mock server (see `batchrun.mock.cli_args`)."""

from batchrun.mock.cli_args import main

__all__: list[str] = []

raise SystemExit(main())
