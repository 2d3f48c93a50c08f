"""``python -m mcos`` is the ``mcos`` command."""

from mcos.cli import main

main()
