# chatmixer image: one image, every role (`mixer run`, `ingest`, `serve`, `merge`). docs/deploy.md explains it.
# The first stage builds the wheel from the checkout, and the wheels of its dependencies; the final stage installs
# only those wheels, offline, into a venv (as a user would, never the checkout in editable mode), so what runs in a
# container is what the wheel ships. A venv rather than the system Python: Debian's python3 refuses pip installs
# outside one (PEP 668), and the official python images accept both.
#
#   docker build -t chatmixer .                     # on the official python:3.11-slim
#   podman build --format docker -t chatmixer .     # podman keeps HEALTHCHECK only in the docker format
#   ... --build-arg PYTHON_IMAGE=localhost/chatmixer-python:bookworm    # any Debian-like image with python3 3.11+
#   ... --secret id=ca,src=/path/ca-bundle.pem      # a registry behind a TLS-intercepting proxy: its CA bundle
#
# The CA bundle is a build secret: mounted for pip's one RUN in the build stage, in no layer of either stage.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS wheel
RUN python3 -m venv /build
WORKDIR /src
# The dependencies' wheels first, from pyproject.toml alone: this layer is reused until the dependencies change, so a
# rebuild after a code change downloads nothing (it builds only the chatmixer wheel, offline, below).
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /build/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
print("\n".join(p["build-system"]["requires"])); print("\n".join(p["project"]["dependencies"]), file=open("deps", "w"))' \
        > build-requires \
    && /build/bin/pip install --quiet --disable-pip-version-check --no-cache-dir -r build-requires \
    && /build/bin/pip wheel --quiet --disable-pip-version-check --no-cache-dir --wheel-dir /dist -r deps
COPY README.md ./
COPY mixer ./mixer
COPY web ./web
RUN /build/bin/pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation --wheel-dir /dist . \
    && sha256sum /dist/*.whl > /wheels.sha256

FROM ${PYTHON_IMAGE}
# uid 10001, numeric, so Kubernetes' runAsNonRoot can verify it; no login shell, no password.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin mixer
# The wheels are mounted from the build stage for this one RUN (a COPY would keep them in a layer of their own). The
# layer cache does not look into a mounted stage (buildah's at least), so their checksums are copied first: when a
# wheel changes, this COPY does, and the install below runs again. They stay in the image: what is installed.
COPY --from=wheel /wheels.sha256 /opt/chatmixer.wheels.sha256
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    python3 -m venv /opt/chatmixer \
    && /opt/chatmixer/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /dist \
        /dist/chatmixer-*.whl
USER 10001:10001
WORKDIR /home/mixer
ENV PATH=/opt/chatmixer/bin:$PATH PYTHONUNBUFFERED=1 MIXER_SERVER_HOST=0.0.0.0
EXPOSE 8080
# For the default command (`mixer run`, or `mixer serve`): the fan-out answers /readyz once it can serve. The
# ingest and merge roles serve no HTTP: their probe is `mixer ingest --check` / `mixer merge --check`
# (docker-compose.yml and k8s/ set it per role).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('MIXER_SERVER_PORT', '8080'), timeout=4)"]
CMD ["mixer", "run"]
