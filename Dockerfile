# caseroom container image.
#
#   docker build --build-arg VERSION=1.2.3 -t caseroom .
#   docker run --rm -v caseroom-data:/data caseroom -e   # writes /data/config.yaml from the example; edit it:
#       appservice.listen must be 0.0.0.0:29350 (127.0.0.1 is unreachable from outside the container),
#       appservice.address the URL the homeserver reaches the container at, data_dir /data
#       (metrics.listen stays on loopback inside the container unless set to e.g. 0.0.0.0:29351 for a scraper)
#   docker run --rm -v caseroom-data:/data caseroom -g   # fills in the secrets, writes /data/registration.yaml
#   docker run -d -v caseroom-data:/data -p 29350:29350 caseroom

# --- build ---------------------------------------------------------------------------------------------------
# go.mod asks for go1.26.8 or later and the golang images set GOTOOLCHAIN=local: build with --pull so that an old
# cached golang:1.26 image is not used.
FROM golang:1.26-bookworm AS build
WORKDIR /src

# Dependencies first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
# VERSION goes into `caseroom -v`; empty keeps the version in cmd/caseroom.
ARG VERSION=""
# cgo for SQLite (mattn/go-sqlite3; gcc is in this image); goolm is pure-Go end-to-end encryption (no libolm).
RUN CGO_ENABLED=1 go build -tags goolm -trimpath \
        -ldflags "-s -w${VERSION:+ -X main.Version=${VERSION}}" \
        -o /out/caseroom ./cmd/caseroom \
    && /out/caseroom -v

# --- runtime -------------------------------------------------------------------------------------------------
# Same Debian release as the build stage, so the cgo binary finds the glibc it was linked against.
FROM debian:bookworm-slim

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1337 caseroom \
    && useradd --uid 1337 --gid caseroom --home-dir /data --no-create-home --shell /usr/sbin/nologin caseroom \
    && mkdir /data \
    && chown caseroom:caseroom /data \
    && chmod 0700 /data

COPY --from=build /out/caseroom /usr/local/bin/caseroom

# Numeric, so that runtimes can check it is not root (Kubernetes runAsNonRoot).
USER 1337:1337
WORKDIR /data
# Declared after /data got its owner: a new volume starts as a copy of it.
VOLUME /data
EXPOSE 29350

ENTRYPOINT ["/usr/local/bin/caseroom"]
CMD ["-c", "/data/config.yaml", "-r", "/data/registration.yaml"]
