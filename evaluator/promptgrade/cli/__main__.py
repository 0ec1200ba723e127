"""``python -m promptgrade.cli``: the same command as the ``promptgrade`` script."""

from promptgrade.cli import main

main()
