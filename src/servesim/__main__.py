"""`python -m servesim` runs the CLI."""

from servesim.cli import main

main()
