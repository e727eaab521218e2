# NVIDIA's Triton with the python backend; model.py runs in the environment linked as <model>/pyenv
# (config.pbtxt: EXECUTION_ENV_PATH = $$TRITON_MODEL_DIRECTORY/pyenv), here a venv of the image's Python.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv curl && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/pyenv \
 && /opt/pyenv/bin/pip install --no-cache-dir "numpy==1.26.4" "onnxruntime-gpu==1.20.1"
CMD ["bash", "-c", "ln -sfn /opt/pyenv /models/recstream/pyenv && exec tritonserver --model-repository=/models --model-control-mode=explicit --load-model=recstream"]
