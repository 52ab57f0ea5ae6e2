# The replay exchange of the kind e2e: `svoe replay serve` (from the feedpod image, which carries
# svoe and trustme) behind the subscription-routing front of e2e/local/exchange_front.py, with the
# capture of one exchange baked in.
FROM svoe-feedpod:base
COPY captures/ /opt/e2e/captures/
COPY exchange_front.py /opt/e2e/exchange_front.py
ENTRYPOINT ["python", "/opt/e2e/exchange_front.py"]
