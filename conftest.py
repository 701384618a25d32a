"""Root conftest: shared fixtures (throwaway NATS, settings) for every test directory."""

pytest_plugins = ["cvops.core.testing"]
