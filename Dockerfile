# One image for the producer, the web API, the Streamlit app and (profile "analytics") the
# Spark job. Kafka itself is the official apache/kafka image (compose.yml).

# Jars from Maven Central: Spark's Kafka connector at the pyspark version.
FROM maven:3.9-eclipse-temurin-17 AS jars
COPY tools/maven/spark/pom.xml /build/pom.xml
RUN mvn -q -B -f /build/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
      -DexcludeTransitive=true -DoutputDirectory=/jars

# The dashboard's front-end assets from the npm registry.
FROM node:20-bookworm-slim AS assets
WORKDIR /build/webapi
COPY webapi/package.json webapi/package-lock.json ./
COPY webapi/static ./static
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm
# Java only serves the analytics profile (pyspark); it is small next to pyspark itself.
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY producer producer
COPY webapi webapi
COPY ui ui
COPY analytics analytics
COPY common common
COPY tools tools
RUN pip install --no-cache-dir .
COPY --from=jars /jars /app/.cache/spark/jars
COPY --from=assets /build/webapi/node_modules /app/webapi/node_modules
COPY --from=assets /build/webapi/static /app/webapi/static
ENV PYTHONUNBUFFERED=1 FLEETSTREAM_CACHE=/app/.cache
RUN useradd --create-home fleet && chown -R fleet /app
USER fleet
