# The operator's image for builders with a Docker engine (`docker build -t vaultsync:0.1.0 .`).
# Same shape as `make image`, which builds it without Docker: a release binary linked
# statically against glibc, Debian's CA bundle, numeric non-root user 65532, nothing else.

# The toolchain rust-toolchain.toml pins.
FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# --target keeps crt-static off build scripts and proc macros.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin vaultsync \
 && install -m 0755 target/x86_64-unknown-linux-gnu/release/vaultsync /vaultsync \
 && printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >/passwd \
 && printf 'nonroot:x:65532:\n' >/group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /passwd /etc/passwd
COPY --from=build /group /etc/group
COPY --from=build /vaultsync /vaultsync
USER 65532:65532
# Health, readiness and metrics (--health-addr).
EXPOSE 8080
ENTRYPOINT ["/vaultsync"]
