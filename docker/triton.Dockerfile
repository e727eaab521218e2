# NVIDIA's Triton 24.10 (tritonserver 2.51, the release the embedded stack runs from nvidia-pytriton) with the
# python backend. model.py runs in the environment linked as <model>/pyenv (config.pbtxt: EXECUTION_ENV_PATH =
# $$TRITON_MODEL_DIRECTORY/pyenv), here a venv of the image's Python with onnxruntime-gpu (CUDA 12 and cuDNN 9,
# which the image ships). config.pbtxt's KIND_AUTO instance group becomes one KIND_GPU instance on each GPU the
# container sees (docker-compose.yml reserves one), and model.py runs onnxruntime's CUDA provider on it; a GPU
# instance without a working CUDA provider fails to load instead of running on the CPU.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv curl && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/pyenv \
 && /opt/pyenv/bin/pip install --no-cache-dir "numpy==1.26.4" "onnxruntime-gpu==1.20.1" "threadpoolctl==3.8.0" \
 && /opt/pyenv/bin/python -c "import onnxruntime as o; p = o.get_available_providers(); \
assert 'CUDAExecutionProvider' in p, f'onnxruntime-gpu without CUDA: {p}'"
# the model to serve: recstream (MovieLens-100K and your own events) or recstream-ml-1m (docker-compose.yml passes it)
ENV RECSTREAM_MODEL_NAME=recstream
CMD ["bash", "-c", "ln -sfn /opt/pyenv \"/models/$RECSTREAM_MODEL_NAME/pyenv\" && exec tritonserver --model-repository=/models --model-control-mode=explicit \"--load-model=$RECSTREAM_MODEL_NAME\""]
