"""``python -m contrastkit``: the command line (see ``contrastkit.cli.main``)."""

from contrastkit.cli.main import main

main()
