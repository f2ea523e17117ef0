# sentinel-sidecar image: a wheel built in one stage, installed into a venv in the next.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Optional CA bundle for pip behind a TLS-inspecting proxy; build-time only, never in the image.
ARG PIP_CERT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
ARG PIP_CERT
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sentinel-sidecar" \
      org.opencontainers.image.description="Pod sidecar that records what a workload uses and ships it to Sentinel, S3 or a directory" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/sparecores/sentinel-sidecar"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRACKER_SPOOL_DIR=/var/lib/sentinel-sidecar
COPY --from=build /dist/ /tmp/dist/
COPY requirements.lock /tmp/dist/
# Dependencies exactly as locked (every file checked against its hash), then the agent alone.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
      -r /tmp/dist/requirements.lock \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /tmp/dist/*.whl \
 && /opt/venv/bin/pip uninstall --yes --disable-pip-version-check pip setuptools \
 && rm -rf /tmp/dist \
 && mkdir -p /var/lib/sentinel-sidecar \
 && chown 65532:65532 /var/lib/sentinel-sidecar
USER 65532:65532
WORKDIR /var/lib/sentinel-sidecar
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["sentinel-sidecar"]
CMD ["run"]
