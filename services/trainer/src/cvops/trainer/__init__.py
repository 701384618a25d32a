"""cvops-trainer: genetic hyperparameter search whose objectives are measured on the exported
ONNX model; a coordinator per job and trials spread over every trainer instance."""
