# chatmixer image: one image, every role (`mixer run`, `ingest`, `serve`, `merge`).
# The first stage builds the wheel from the checkout; the image itself installs only that wheel (as a user
# would, never the checkout in editable mode), so what runs in a container is what the wheel ships.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mixer ./mixer
COPY web ./web
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
COPY --from=wheel /dist /dist
RUN pip install --no-cache-dir /dist/*.whl && rm -rf /dist && useradd --create-home mixer
USER mixer
WORKDIR /home/mixer
ENV PYTHONUNBUFFERED=1 MIXER_SERVER_HOST=0.0.0.0
EXPOSE 8080
CMD ["mixer", "run"]
