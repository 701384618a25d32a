"""cvops-converter: turns a registered model version into deployable engines (ONNX, FP16, INT8,
OpenVINO, TensorRT), each with a parity report and held to an accuracy gate.

Public pieces: ``cvops.converter.projection`` (the SQLite view and ``db_path``),
``cvops.converter.app.main`` (the service), ``python -m cvops.converter``.
"""
