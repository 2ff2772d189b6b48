# The whereabouts image, for users with a Docker engine: `docker build -t whereabouts .`
# The same image scripts/build-image.sh builds here without one: Debian bookworm with its Python 3.11,
# python3-yaml, python3-croniter (the controller's schedule), python3-prometheus-client (metrics) and patchelf,
# the project, its commands, and the
# self-contained plugin bundle (scripts/make_bundle.py) that install-cni copies onto each node, with the
# compiled relay (scripts/build-relay.sh), built in a stage of its own so that no compiler is left in the image.
FROM debian:bookworm AS relay
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev
COPY src/whereabouts/node/relay.c /build/src/whereabouts/node/relay.c
COPY scripts/build-relay.sh /build/scripts/build-relay.sh
RUN bash /build/scripts/build-relay.sh /whereabouts-relay

FROM debian:bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-yaml \
       python3-croniter python3-prometheus-client patchelf binutils \
    && rm -rf /var/lib/apt/lists/*
COPY src/whereabouts /src/whereabouts
COPY scripts/make_bundle.py /scripts/make_bundle.py
COPY --from=relay /whereabouts-relay /scripts/whereabouts-relay
RUN cp -r /src/whereabouts /usr/lib/python3/dist-packages/whereabouts \
    && python3 -m whereabouts.node.launcher /usr/local/bin --python /usr/bin/python3 \
    && python3 -m compileall -q /usr/lib/python3/dist-packages/whereabouts \
    && python3 /scripts/make_bundle.py / /opt/whereabouts/bundle --relay /scripts/whereabouts-relay \
    && apt-get purge -y binutils && apt-get autoremove -y && rm -rf /src /scripts
CMD ["whereabouts-install-cni"]
