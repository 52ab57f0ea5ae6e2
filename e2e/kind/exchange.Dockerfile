# The replay exchange of the kind e2e: `svoe replay serve` from the feedpod image (which carries
# svoe and trustme), with the capture of one exchange baked in. It routes each websocket
# connection the streams it subscribed to (svoe/replay/routing.py).
FROM svoe-feedpod:e2e
COPY captures/ /opt/e2e/captures/
ENTRYPOINT ["svoe", "replay", "serve"]
