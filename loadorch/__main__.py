"""`python -m loadorch ...` is `spike ...` (how spike starts its own agents)."""

from loadorch.cli.main import main

main()
