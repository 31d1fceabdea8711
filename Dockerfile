# The images the Kubeflow pipeline's components run in: darts_tf + darts_tf_pipelines (components, pipelines) + kfp
# + Graphviz, as a non-root user, without test tools. Two targets:
#   cpu  TensorFlow for CPU (the requirements.txt pins): ingest, derive, and every stage of a CPU-only run
#   gpu  tensorflow[and-cuda] (CUDA wheels from PyPI), installed with the requirements.txt pins as constraints
#
#   docker build --target cpu -t REGISTRY/darts-tf:TAG-cpu .
#   docker build --target gpu -t REGISTRY/darts-tf:TAG-gpu .
#   docker push REGISTRY/darts-tf:TAG-cpu && docker push REGISTRY/darts-tf:TAG-gpu
#   python -m pipelines.compile --pipeline cnn --image REGISTRY/darts-tf:TAG-cpu \
#       --gpu_image REGISTRY/darts-tf:TAG-gpu --output cnn_pipeline.yaml
#
# The base is pinned to an exact Python patch release on an exact Debian release (no floating tag); pass
# --build-arg PYTHON_IMAGE=... to move it (pin a digest, python:3.11.13-slim-bookworm@sha256:..., for byte-identical
# rebuilds).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------------------------------------------- wheel
# The project as a wheel; only the wheel reaches the runtime images (no source tree, no tests).
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY darts_tf ./darts_tf
COPY components ./components
COPY pipelines ./pipelines
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
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

# The user every stage runs as (uid 1000, no login shell). KFP's launcher puts artifacts under /gcs, /minio and /s3:
# recent backends mount emptyDirs there; older ones need them to exist writable by the user.
RUN groupadd --gid 1000 darts \
    && useradd --uid 1000 --gid darts --create-home --home-dir /home/darts --shell /usr/sbin/nologin darts \
    && mkdir -p /gcs /minio /s3 && chown darts:darts /gcs /minio /s3

# The runtime requirements: requirements.txt without the test tools (pytest, pytest-xdist).
COPY requirements.txt /opt/darts_tf/requirements.txt
RUN grep -v -E '^(pytest|pytest-xdist)==' /opt/darts_tf/requirements.txt > /opt/darts_tf/runtime-requirements.txt

# ---------------------------------------------------------------------------------------------------- gpu
FROM runtime AS gpu
ARG TF_GPU_PACKAGE="tensorflow[and-cuda]==2.21.0"
# TensorFlow with CUDA in place of tensorflow-cpu; every other package, and whatever TensorFlow pulls in that
# requirements.txt pins (keras, numpy, protobuf, ...), at the pinned version (-c: constraints).
RUN grep -v -E '^tensorflow-cpu==' /opt/darts_tf/runtime-requirements.txt > /opt/darts_tf/gpu-requirements.txt \
    && pip install -c /opt/darts_tf/requirements.txt "$TF_GPU_PACKAGE" -r /opt/darts_tf/gpu-requirements.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && python -c "import darts_tf.tasks, darts_tf_pipelines.components, darts_tf_pipelines.pipelines, kfp; \
print('darts_tf gpu image ok, kfp', kfp.__version__)" \
    && ! python -c "import pytest" 2>/dev/null
USER darts
WORKDIR /home/darts
# KFP runs each component's own command; this default only makes `docker run IMAGE` say what is inside.
CMD ["python", "-m", "darts_tf_pipelines.pipelines.run", "--help"]

# ---------------------------------------------------------------------------------------------------- cpu
# Last, so that a plain `docker build .` builds it.
FROM runtime AS cpu
RUN pip install -r /opt/darts_tf/runtime-requirements.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && python -c "import darts_tf.tasks, darts_tf_pipelines.components, darts_tf_pipelines.pipelines, kfp; \
print('darts_tf cpu image ok, kfp', kfp.__version__)" \
    && ! python -c "import pytest" 2>/dev/null
USER darts
WORKDIR /home/darts
CMD ["python", "-m", "darts_tf_pipelines.pipelines.run", "--help"]
