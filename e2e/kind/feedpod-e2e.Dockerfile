# The feed pod image of the kind e2e: the Dockerfile's `feedpod` target plus what the cluster
# cannot give a feed pod today (see README.md): the exchange's CA, and MinIO as the S3 endpoint.
# On EKS the pod-identity webhook injects the AWS credentials; here they are MinIO's test keys.
FROM svoe-feedpod:base
ARG NAMESPACE=svoe-e2e
COPY exchange-ca.pem /etc/ssl/svoe-e2e/exchange-ca.pem
ENV AWS_ENDPOINT_URL=http://minio.${NAMESPACE}.svc:9000 \
    WR_S3_ENDPOINT_URL=http://minio.${NAMESPACE}.svc:9000 \
    AWS_ACCESS_KEY_ID=svoe-e2e \
    AWS_SECRET_ACCESS_KEY=svoe-e2e-secret \
    AWS_DEFAULT_REGION=us-east-1
