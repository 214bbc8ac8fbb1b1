# Debian's jq as a FROM scratch image holding one file, the jq packed by tote.
#
# The build context holds only the tote binary (cargo build --release; cp target/release/tote
# CONTEXT/). The build stage is the local Debian image scripts/debian-image makes, with jq
# already in it. With a registry, the same stage is:
#   FROM debian:bookworm AS build
#   RUN apt-get update && apt-get install -y --no-install-recommends jq
ARG BUILDER=localhost/tote-debian-builder:bookworm

FROM $BUILDER AS build
COPY tote /usr/local/bin/tote
RUN tote pack /usr/bin/jq -o /jq

FROM scratch
COPY --from=build /jq /jq
ENTRYPOINT ["/jq"]
