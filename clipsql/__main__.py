"""``python -m clipsql`` runs the command line."""

from .cli import main

main()
