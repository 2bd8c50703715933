"""The contrastkit command line; see ``contrastkit.cli.main``."""
