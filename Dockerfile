# syntax=docker/dockerfile:1
#
# Needs BuildKit (Docker 23+, docker buildx, or podman/buildah 1.33+).
#
# One image, static binaries, no shell: /pm (the entrypoint), /crmsim (the CRM
# simulator, for demos and tests), /pmctl (the CLI, once cmd/pmctl exists) and
# /healthcheck (an HTTP probe for `docker run` / compose healthchecks, since
# the image has no curl or wget).
#
#   docker build -t oaas-pm --build-arg VERSION=$(git describe --tags --always) .
#   docker run --rm -p 8080:8080 -e AUTH_MODE=none oaas-pm
#   docker run --rm --entrypoint /crmsim oaas-pm --cluster east=0.0.0.0:8091
#
# GO_VERSION follows the go directive of go.mod (the newest patch release of
# that minor version; a toolchain never builds a module that asks for a newer
# one).
ARG GO_VERSION=1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Static binaries: no libc in the runtime image. -trimpath keeps build paths
# out of the binaries.
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
# Modules first, so a source change does not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION=dev
# pmctl is built when its directory is in the tree, so this file builds
# both before and after the CLI lands.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build <<EOF
set -eu
mkdir -p /out
for pkg in ./cmd/pm ./cmd/crmsim ./cmd/pmctl ./deploy/docker/healthcheck; do
  if [ ! -d "$pkg" ]; then
    if [ "$pkg" = ./cmd/pmctl ]; then echo "skipping $pkg (not in this tree)"; continue; fi
    echo "missing $pkg" >&2; exit 1
  fi
  GOOS=$TARGETOS GOARCH=$TARGETARCH go build -buildvcs=false \
    -ldflags "-s -w -X github.com/oaas/pm/internal/version.Version=${VERSION}" \
    -o "/out/$(basename "$pkg")" "$pkg"
done
EOF

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="oaas-pm" \
      org.opencontainers.image.description="OaaS Package Manager: package registry and multi-cluster class deployments" \
      org.opencontainers.image.source="https://github.com/oaas/pm" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/ /
# distroless's nonroot user; stated again so a different RUNTIME_IMAGE
# cannot run PM as root.
USER 65532:65532
# 8080: every API protocol and the probes; 9090: Prometheus /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/pm"]
