# The worker image, built in the cloud: `az acr build --registry <acr> --image servicebus-job:v1 .`
#
# Stage 1 compiles a statically linked glibc binary (no shared libraries needed at run time);
# stage 2 is `scratch` with just that binary, a CA bundle (TLS to *.servicebus.windows.net) and a
# non-root user. The result is about the size of the binary (see docs/benchmarks.md).
# The local lab builds its images with `cargo xtask images` instead (no registry, no pulls).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# crt-static links glibc in; `--target` keeps that flag away from proc-macros (which must stay
# dynamic); the getrandom cfg avoids a dlsym lookup that fails in a static binary.
ENV RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\""
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && cargo build --release --locked --target "$target" -p aca-job-lab --bin servicebus-job \
 && cp "target/$target/release/servicebus-job" /servicebus-job \
 && echo 'job:x:10001:10001:servicebus-job:/:/sbin/nologin' > /passwd \
 && echo 'job:x:10001:' > /group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /passwd /etc/passwd
COPY --from=build /group /etc/group
COPY --from=build /servicebus-job /servicebus-job
USER 10001:10001
ENTRYPOINT ["/servicebus-job"]
