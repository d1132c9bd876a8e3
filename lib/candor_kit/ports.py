"""The fixed ports of Candor's containers and pods, and of the infrastructure they reach: the
compose files, the kustomize manifests and the images all use these (tests/deploy checks them)."""

#: The port every service serves gRPC on inside a container or pod, and its health-only port.
GRPC_PORT = 50051
HEALTH_PORT = 50052
#: The port every service serves Prometheus metrics on (HTTP, /metrics) inside a container or pod.
METRICS_PORT = 9464
#: Ports of the infrastructure the services reach.
NATS_CLIENT_PORT = 4222
NATS_CLUSTER_PORT = 6222
NATS_MONITOR_PORT = 8222
QDRANT_HTTP_PORT = 6333
QDRANT_GRPC_PORT = 6334
QDRANT_P2P_PORT = 6335
OTLP_GRPC_PORT = 4317
#: The port the review desk serves HTTP(S) on inside a container or pod.
REVIEW_PORT = 8443
