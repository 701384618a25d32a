"""``python -m cvops.client``: the same as the ``cvops`` command."""

from cvops.client.cli import main

main()
