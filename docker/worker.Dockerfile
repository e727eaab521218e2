# The Faust worker: no torch, no GPU.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream stream
COPY recstream recstream
COPY trainer trainer
RUN pip install --no-cache-dir .
EXPOSE 6066
CMD ["recstream", "worker"]
