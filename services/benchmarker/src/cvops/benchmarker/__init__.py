"""cvops-benchmarker: measures every engine this host can run for a model version (latency,
throughput, memory, accuracy) and recommends one under a service-level agreement.

Public pieces: ``cvops.benchmarker.projection`` (the SQLite view and ``db_path``),
``cvops.benchmarker.app.main`` (the service), ``python -m cvops.benchmarker``.
"""
