# syntax=docker/dockerfile:1
# The Portico Triggers image: `portico operator` by default, `portico queue-service` and
# `portico validate` with other arguments. Build: docker build -t portico/portico-triggers:dev .
#
# Two stages: the build stage creates a virtualenv from requirements.lock (exact versions, installed
# without dependency resolution) plus the project itself; the final stage copies only that virtualenv
# onto the same slim Python base, so no compiler, pip cache or source tree ships.

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/portico
COPY requirements.lock ./
RUN /opt/portico/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/portico/bin/pip install --no-deps . \
 && /opt/portico/bin/pip check \
 && /opt/portico/bin/pip uninstall --yes pip \
 && find /opt/portico -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/portico/bin/python -m compileall -q /opt/portico/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="portico-triggers" \
      org.opencontainers.image.description="Kubernetes operator turning JobTrigger resources into background jobs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/portico /opt/portico
ENV PATH=/opt/portico/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORTICO_LOG_FORMAT=json
# A fixed numeric non-root user (Kubernetes' runAsNonRoot can only verify numeric users).
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081 9090
ENTRYPOINT ["portico"]
CMD ["operator"]
