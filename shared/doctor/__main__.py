"""Entry point of `python -m shared.doctor`."""

from shared.doctor.cli import main

raise SystemExit(main())
