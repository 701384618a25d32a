"""Root conftest: shared fixtures (throwaway NATS, settings) for every test directory."""

import os

# On a shared 2-core host one torch thread trains several times faster than two
# (measured in libs/vision/README.md); tests run beside NATS and service processes.
os.environ.setdefault("CVOPS_TORCH_THREADS", "1")

pytest_plugins = ["cvops.testing.core"]
