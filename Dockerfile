# The image every Kubeflow pipeline component runs in: darts_tf + components + pipelines + kfp + Graphviz.
#   docker build -t REGISTRY/darts-tf:TAG .
#   docker push REGISTRY/darts-tf:TAG
#   python -m pipelines.compile --pipeline cnn --image REGISTRY/darts-tf:TAG --output cnn_pipeline.yaml
# GPU clusters: build with --build-arg TF_PACKAGE="tensorflow[and-cuda]==2.21.0" (CUDA wheels from PyPI).
FROM python:3.11-slim

ARG TF_PACKAGE=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# Graphviz's `dot` draws the cell pictures (darts_tf.visualize).
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/darts_tf
# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt ./
RUN pip install -r requirements.txt \
    && if [ -n "$TF_PACKAGE" ]; then pip uninstall -y tensorflow-cpu && pip install "$TF_PACKAGE"; fi

COPY pyproject.toml README.md* ./
COPY darts_tf ./darts_tf
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps . \
    && python -c "import darts_tf, components, pipelines, kfp; print('darts_tf image ok, kfp', kfp.__version__)"

# KFP runs each component's own command; this default only makes `docker run IMAGE` say what is inside.
CMD ["python", "-m", "pipelines.run", "--help"]
