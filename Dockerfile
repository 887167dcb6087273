# chatmixer image: one image, every role (`mixer run`, `ingest`, `serve`, `merge`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mixer ./mixer
COPY web ./web
RUN pip install --no-cache-dir -e . && useradd --create-home mixer
USER mixer
ENV PYTHONUNBUFFERED=1 MIXER_SERVER_HOST=0.0.0.0
EXPOSE 8080
CMD ["mixer", "run"]
