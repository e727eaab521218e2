"""Training, evaluation, ONNX export and publishing of the recstream model (data -> sequences -> train ->
evaluate -> export -> publish). ``trainer.data`` does not import torch."""
