"""cvops-registry: validates uploaded models and data sets and numbers their versions.

Public pieces: ``cvops.registry.projection`` (the SQLite view and ``db_path``),
``cvops.registry.app.main`` (the service), ``python -m cvops.registry``.
"""
