# syntax=docker/dockerfile:1.7
# One image for the gateway, the function host and the Redis-stream bridge; the command picks:
#   python -m realtime --host 0.0.0.0 --port 8000
#   python -m functions host --host 0.0.0.0 --port 8080
#   python -m functions.aws.bridge --function message --lambda <name>
# The base images are build arguments only so that `make test-image` can build this same file
# from local Debian bases where no registry is reachable; a normal build uses these defaults.
ARG NODE_IMAGE=node:22-slim
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${NODE_IMAGE} AS web
WORKDIR /src
COPY package.json package-lock.json ./
# Only the browser page's Socket.IO client; nothing from npm runs in the image.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# Nothing installs packages at run time: pip (and setuptools, which Python 3.11's venv adds) stay
# behind, a tenth of the image.
RUN /opt/venv/bin/pip install --require-hashes -r /tmp/requirements.lock \
 && /opt/venv/bin/python -m pip uninstall -q -y pip setuptools

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --home-dir /app chat
WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
COPY --from=web /src/node_modules/socket.io-client/dist /app/node_modules/socket.io-client/dist
COPY chat ./chat
COPY functions ./functions
COPY realtime ./realtime
USER chat
EXPOSE 8000 8080
STOPSIGNAL SIGTERM
CMD ["python", "-m", "realtime", "--host", "0.0.0.0", "--port", "8000"]
