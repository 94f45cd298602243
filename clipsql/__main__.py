"""``python -m clipsql`` runs the command line."""

from clipsql.cli import main

main()
