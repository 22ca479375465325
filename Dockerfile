# fwatchdog image: the static (musl) binary alone, FROM scratch, as /fwatchdog.
#
# Templates and functions take it with
#     COPY --from=<this image> /fwatchdog /usr/bin/fwatchdog
#
# Two ways to build it:
#
#   from source (pulls the Rust builder image):
#     docker build -t fwatchdog .
#
#   from a binary built on the host (no base image to pull, works offline):
#     rustup target add x86_64-unknown-linux-musl
#     cargo build --release --target x86_64-unknown-linux-musl
#     docker build --target from-host -t fwatchdog .
#   another binary: --build-arg HOST_BINARY=target/aarch64-unknown-linux-musl/release/fwatchdog
#
# Stage order matters: the legacy builder (no BuildKit) builds every stage up to the
# target, so the host path comes first and never touches the Rust builder image.
# BuildKit builds only the stages the target needs, whatever the order.

ARG RUST_IMAGE=rust:1.95-slim
# BuildKit sets this itself; the legacy builder does not, and an empty
# `FROM --platform=` is an error there.
ARG BUILDPLATFORM=linux/amd64

# ---- what every fwatchdog image is: no shell, no libc, no files but the binary ----
FROM scratch AS runtime
# /tmp (mode 1777, for the lock file): scratch has none and no shell to make one, so it
# comes from a tar archive, which ADD unpacks with its mode. It was made with
#   mkdir -p t/tmp && chmod 1777 t/tmp && tar --numeric-owner --owner=0 --group=0 \
#     --mtime=@0 -C t -cf - tmp | gzip -9n > docker/tmp.tar.gz
ADD docker/tmp.tar.gz /
EXPOSE 8080 8081
ENTRYPOINT ["/fwatchdog"]

# ---- the binary from the host's target/ folder (see .dockerignore) ----
# from-host without the binary fails the build ("fwatchdog: not found") under BuildKit,
# the builder of current Docker (buildx). The legacy builder (DOCKER_BUILDKIT=0, or a
# docker CLI without buildx) builds these two stages on every build, from source too, so
# there they must not fail when there is no host binary: Cargo.toml keeps the first
# COPY from matching nothing, and the empty /host/none/ does the same for the second;
# such an image has no /fwatchdog. A HOST_BINARY given explicitly must exist, under
# either builder. HOST_BINARY's file name must be `fwatchdog`.
FROM scratch AS host-binary
# linux/arm64: one binary per TARGETARCH, so `docker buildx build --platform
# linux/amd64,linux/arm64 --target from-host` gives each platform its own binary.
ARG TARGETARCH
# Unset: the binary for TARGETARCH from target/<rust target>/release/. Set: that file.
ARG HOST_BINARY=Cargo.toml
WORKDIR /host/none
COPY Cargo.toml target/x86_64-unknown-linux-musl/release/fwatchdo[g] /host/amd64/
COPY Cargo.toml target/aarch64-unknown-linux-musl/release/fwatchdo[g] /host/arm64/
COPY Cargo.toml ${HOST_BINARY} /host/${TARGETARCH:-amd64}/

FROM runtime AS from-host
# BuildKit sets TARGETARCH: then the name is exactly `fwatchdog`, and a missing binary
# fails the build. The legacy builder leaves it empty: then `fwatchdo[g]`, a pattern
# that may match nothing (see above).
ARG TARGETARCH
COPY --from=host-binary /host/none/ /host/${TARGETARCH:-amd64}/fwatchdo${TARGETARCH:+g}${TARGETARCH:-[g]} /

# ---- the binary built from source ----
# --platform=$BUILDPLATFORM: the compiler runs natively and cross-compiles to
# TARGETARCH, which is much faster than building under emulation.
FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS build
# ---- TARGETARCH -> Rust target (linux/amd64 and linux/arm64) ----
#   docker buildx build --platform linux/amd64,linux/arm64 -t fwatchdog .
# Set by BuildKit from --platform; the legacy builder leaves them empty (= amd64). No
# defaults on these ARGs: a default would shadow the value BuildKit passes.
ARG TARGETARCH
ARG BUILDARCH
# The Rust target brings its own musl; gcc is only the link driver. Debian's gcc is also
# installed under its triplet name, so these linkers are the native gcc when the two
# architectures match, and the cross gcc installed below when they differ (same as the
# repo's .cargo/config.toml, which the build context does not include).
# The same gcc compiles mimalloc (C), the allocator of these builds. The rustflags make a
# static executable at a fixed address, as in .cargo/config.toml (see there).
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=x86_64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C relocation-model=static" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C relocation-model=static" \
    CC_x86_64_unknown_linux_musl=x86_64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
RUN case "${TARGETARCH:-amd64}" in \
      amd64) target=x86_64-unknown-linux-musl; gcc="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
      arm64) target=aarch64-unknown-linux-musl; gcc="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
      *) echo "fwatchdog: no Rust target for TARGETARCH=${TARGETARCH} (amd64, arm64)" >&2; exit 1 ;; \
    esac \
 && if [ "${TARGETARCH:-amd64}" != "${BUILDARCH:-amd64}" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $gcc \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && echo "$target" > /rust-target \
 && rustup target add "$target"
# ---- end TARGETARCH ----
WORKDIR /src
# Dependencies first, in their own layer, so a source change does not fetch them again.
# The stub files only satisfy the manifest's target list.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/it \
 && touch src/main.rs src/lib.rs tests/it/main.rs \
 && cargo fetch --locked
COPY src ./src
# The x86-64 code layout (build.rs links it with rust-lld and the list in link/).
COPY build.rs ./
COPY link ./link
RUN target="$(cat /rust-target)" \
 && cargo build --release --locked --target "$target" \
 && cp "target/$target/release/fwatchdog" /fwatchdog

# ---- default: the image built from source ----
FROM runtime AS from-source
COPY --from=build /fwatchdog /fwatchdog
