# The image every deploy file runs (deploy/kubernetes names it `koala-ingest`).
# Build: docker build -t registry.example.com/koala-ingest:0.1.0 .
# Only what the package needs is copied (tests/test_deploy.py builds the wheel from exactly
# these files and checks it carries the migrations).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY workers workers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# uid 10001: the manifests' securityContext (runAsUser, runAsNonRoot)
RUN useradd --uid 10001 --user-group --create-home koala
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels koala-ingest \
    && rm -rf /wheels
USER 10001
WORKDIR /home/koala
# JSON logs in production; `koala-ingest up` on a laptop keeps the readable format.
ENV PYTHONUNBUFFERED=1 KOALA_LOG_FORMAT=json PORT=8000
EXPOSE 8000
ENTRYPOINT ["koala-ingest"]
CMD ["web"]
