"""``python -m cvops.registry``: run the registry service until SIGTERM."""

from cvops.core import run_service
from cvops.registry.app import main

if __name__ == "__main__":
    run_service("registry", main)
