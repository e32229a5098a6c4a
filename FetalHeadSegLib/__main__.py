"""``python -m FetalHeadSegLib``: the command line (same as ``fetalheadseg``)."""

from FetalHeadSegLib.cli import main

raise SystemExit(main())
