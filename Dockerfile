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

# Graphviz's `dot` draws the cell pictures (darts_tf.visualize). tcmalloc replaces glibc's malloc in every process
# of the image: on CPU the paper's second-order search step peaks lower at the same speed (FD 11.1 instead of
# 13.3 GiB; benchmarks/RESULTS.md, "tcmalloc"). Set LD_PRELOAD= (empty) to run with glibc's malloc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz libtcmalloc-minimal4 \
    && rm -rf /var/lib/apt/lists/*
ENV LD_PRELOAD=libtcmalloc_minimal.so.4

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
