"""Every setting each service reads, its default and whether it is required: declared once, here.

The services read their configuration through these declarations (``EnvReader.get``), the deployment
files are checked against them (``tests/deploy``), and ``candor settings`` prints them for operators.
A setting with ``default=None`` is required; ``required_if`` makes one required only when another
setting has a given value.
"""

from __future__ import annotations

from candor_kit.setting import Setting, file_setting, float_setting, int_setting

NATS_URL = Setting(
    "CANDOR_NATS_URL", "NATS server URL, nats:// or tls://; a cluster's servers comma-separated, tried in turn"
)
NATS_CREDS = file_setting("CANDOR_NATS_CREDS", "NATS credentials file (JWT and nkey seed)", secret=True)
NATS_USER = Setting("CANDOR_NATS_USER", "NATS user name, with CANDOR_NATS_PASSWORD_FILE", "")
NATS_PASSWORD_FILE = file_setting("CANDOR_NATS_PASSWORD_FILE", "file holding the NATS user's password", secret=True)
NATS_CA = file_setting("CANDOR_NATS_CA", "CA bundle that signed the NATS server's certificate")
NATS_PLAINTEXT = Setting(
    "CANDOR_NATS_PLAINTEXT",
    "allow nats:// to a non-loopback address (only behind a mesh that encrypts)",
    "loopback",
    "choice",
    choices=("loopback", "allow"),
)
GRPC_ADDRESS = Setting("CANDOR_GRPC_ADDRESS", "host:port the gRPC API listens on", "127.0.0.1:0")
HEALTH_ADDRESS = Setting(
    "CANDOR_HEALTH_ADDRESS", "host:port of a plaintext listener with only gRPC health, for probes; empty: none", ""
)
METRICS_ADDRESS = Setting(
    "CANDOR_METRICS_ADDRESS",
    "host:port of the plaintext HTTP listener serving Prometheus metrics at /metrics; empty: none",
    "",
)
SERVICE_TOKEN_SHA256_FILE = Setting(
    "CANDOR_SERVICE_TOKEN_SHA256_FILE",
    "file holding the SHA-256 (64 hex digits) of the bearer token every call to an internal "
    "service's gRPC API must carry (`candor secrets init` writes it as service-token.sha256): the "
    "service keeps only the digest, never the token; gRPC health stays open",
    None,
    "file",
    secret=True,
)
GRPC_TLS_CERT = file_setting("CANDOR_GRPC_TLS_CERT", "PEM certificate chain for serving gRPC over TLS")
GRPC_TLS_KEY = file_setting("CANDOR_GRPC_TLS_KEY", "PEM private key for serving gRPC over TLS", secret=True)
GRPC_PLAINTEXT = Setting(
    "CANDOR_GRPC_PLAINTEXT",
    "allow plaintext gRPC on a non-loopback address (only behind a mesh that encrypts)",
    "loopback",
    "choice",
    choices=("loopback", "allow"),
)
MAX_MESSAGE_BYTES = int_setting(
    "CANDOR_MAX_MESSAGE_BYTES", "largest gRPC or NATS message sent or accepted", 16 << 20, 1 << 20, 64 << 20
)
SHUTDOWN_GRACE_S = float_setting(
    "CANDOR_SHUTDOWN_GRACE_S", "seconds in-flight calls get to finish on SIGTERM", 5.0, 0, 120
)
REQUEST_TIMEOUT_S = float_setting(
    "CANDOR_REQUEST_TIMEOUT_S", "deadline for one call to another service", 30.0, 0.1, 600
)
DLIB_MODEL_DIR = Setting("CANDOR_DLIB_MODEL_DIR", "folder of dlib model files; empty: face_recognition_models", "")
MODEL_FILES_DIR = Setting(
    "CANDOR_MODEL_FILES_DIR",
    "folder of the default model's pack (YuNet and SFace, OpenCV Zoo), each file checked against its "
    "pinned SHA-256; empty: the environment's share/candor/models, filled by python -m candor_kit.model_fetch",
    "",
)

#: Standard OpenTelemetry variables; `candor_kit.telemetry` and the SDK read them.
OTEL = (
    Setting("OTEL_SERVICE_NAME", "service name on traces; default candor-<service>", ""),
    Setting("OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP endpoint for traces; empty: no export", ""),
    Setting("OTEL_EXPORTER_OTLP_PROTOCOL", "OTLP transport: grpc (default) or http/protobuf", ""),
    Setting("OTEL_TRACES_EXPORTER", "otlp, console or none; empty: otlp when an endpoint is set", ""),
    Setting("OTEL_EXPORTER_OTLP_INSECURE", "send OTLP without TLS (collector on the same trusted network)", ""),
    Setting("OTEL_TRACES_SAMPLER", "OpenTelemetry sampler name", ""),
    Setting("OTEL_TRACES_SAMPLER_ARG", "OpenTelemetry sampler argument", ""),
    Setting("OTEL_RESOURCE_ATTRIBUTES", "extra resource attributes, k=v,k=v", ""),
)

COMMON = (
    NATS_URL,
    NATS_CREDS,
    NATS_USER,
    NATS_PASSWORD_FILE,
    NATS_CA,
    NATS_PLAINTEXT,
    GRPC_ADDRESS,
    HEALTH_ADDRESS,
    METRICS_ADDRESS,
    GRPC_TLS_CERT,
    GRPC_TLS_KEY,
    GRPC_PLAINTEXT,
    MAX_MESSAGE_BYTES,
    SHUTDOWN_GRACE_S,
    REQUEST_TIMEOUT_S,
    *OTEL,
)

IMPORT_WORKER = Setting(
    "CANDOR_IMPORT_WORKER",
    "pull bulk-import work from its stage's stream (CANDOR_INGEST_DETECT, _EMBED or _MATCH)",
    "on",
    "choice",
    choices=("on", "off"),
)
IMPORT_BATCH = int_setting("CANDOR_IMPORT_BATCH", "import work items a worker works on at once", 4, 1, 256)
IMPORT_ACK_WAIT_S = float_setting(
    "CANDOR_IMPORT_ACK_WAIT_S", "seconds before an unacknowledged import item is redelivered", 60.0, 1.0, 3600.0
)
IMPORT_MAX_DELIVER = int_setting(
    "CANDOR_IMPORT_MAX_DELIVER", "deliveries of a failing import item before it is dead-lettered", 5, 1, 100
)
INGEST_STREAM_REPLICAS = int_setting(
    "CANDOR_INGEST_STREAM_REPLICAS", "replicas of the import streams when they are created", 1, 1, 5
)
#: What every import worker (detector, embedder, matcher) reads.
IMPORT_SETTINGS = (IMPORT_WORKER, IMPORT_BATCH, IMPORT_ACK_WAIT_S, IMPORT_MAX_DELIVER, INGEST_STREAM_REPLICAS)

DETECTOR_MAX_IMAGE_BYTES = int_setting(
    "CANDOR_DETECTOR_MAX_IMAGE_BYTES", "largest photo file decoded", 15 << 20, 1024, 64 << 20
)
DETECTOR_MAX_PIXELS = int_setting(
    "CANDOR_DETECTOR_MAX_PIXELS", "largest photo, in pixels, decoded", 50_000_000, 10_000, 200_000_000
)
DETECTOR_THREADS = int_setting(
    "CANDOR_DETECTOR_THREADS",
    "photos detected at once, each on its own thread with its own detector; 0, the default, one "
    "per core this process may use (its CPU affinity and cgroup CPU quota). OpenCV's own pool, also "
    "sized to those cores, runs a detection that is alone on every core and one that arrives beside "
    "another on its lane's thread only (bench/search_load.py, 2 cores: one search alone as fast as "
    "with one lane, 15.2 searches/s at 8 clients against 13.4 to 14.6 with one lane)",
    0,
    0,
    64,
)
DETECTOR_WORKING_PIXELS = int_setting(
    "CANDOR_DETECTOR_WORKING_PIXELS",
    "photos are scaled down to this size for detection",
    1_500_000,
    100_000,
    20_000_000,
)

EMBEDDER_ENGINE = Setting(
    "CANDOR_EMBEDDER_ENGINE",
    "embedding engine: sface (the default: OpenCV Zoo SFace, 128-d cosine, from the model files set-up "
    "fetched), dlib (dlib's ResNet on onnxruntime, 128-d Euclidean), dlib-native (on dlib-bin, same "
    "vectors), or onnx (a model pack)",
    "sface",
    "choice",
    choices=("sface", "dlib", "dlib-native", "onnx"),
)
MODEL_PACK = Setting(
    "CANDOR_MODEL_PACK",
    "folder of an ONNX model pack (manifest.json with SHA-256s); never downloaded at run time",
    "",
    required_if=(EMBEDDER_ENGINE, "onnx"),
)
DETECTOR_ENGINE = Setting(
    "CANDOR_DETECTOR_ENGINE",
    "face detector: sface (the default: YuNet with 112 px ArcFace-aligned chips for SFace), yunet or "
    "dlib (YuNet or dlib's HOG, cutting 150 px chips for dlib's ResNet), or onnx (a model pack's "
    "detector); must match the embedder's engine",
    "sface",
    "choice",
    choices=("sface", "yunet", "dlib", "onnx"),
)
#: The same folder as MODEL_PACK, required when the detector runs the pack's SCRFD.
DETECTOR_MODEL_PACK = Setting(MODEL_PACK.name, MODEL_PACK.doc, "", required_if=(DETECTOR_ENGINE, "onnx"))
ACCEPT_MODEL_LICENCES = Setting(
    "CANDOR_ACCEPT_MODEL_LICENCES",
    "comma-separated model ids of packs whose restricted licence (licence_terms in the manifest, e.g. "
    "non-commercial) this deployment accepts; a restricted pack not named here is refused at start",
    "",
    "list",
)
ONNX_PROVIDERS = Setting(
    "CANDOR_ONNX_PROVIDERS",
    "onnxruntime providers: cpu, or cuda (falls back to CPU, and the log says so)",
    "cpu",
    "choice",
    choices=("cpu", "cuda"),
)
EMBEDDER_THRESHOLD = float_setting(
    "CANDOR_EMBEDDER_THRESHOLD", "model's nominal distance threshold; 0: the engine's own", 0.0, 0.0, 4.0
)
EMBEDDER_MAX_BATCH = int_setting("CANDOR_EMBEDDER_MAX_BATCH", "most chips embedded in one batch", 32, 1, 1024)

MATCHER_BACKEND = Setting(
    "CANDOR_MATCHER_BACKEND", "gallery index: embedded Qdrant Edge or a Qdrant server", "edge", "choice",
    choices=("edge", "server"),
)  # fmt: skip
MATCHER_DATA_DIR = Setting(
    "CANDOR_MATCHER_DATA_DIR", "folder of the embedded gallery", "", required_if=(MATCHER_BACKEND, "edge")
)
MATCHER_AUDIT_OUTBOX = Setting(
    "CANDOR_MATCHER_AUDIT_OUTBOX",
    "file of the matcher's audit outbox: its record of each search is written there before the answer "
    "(it survives the process's death; the system writes it to disk within its write-back interval) "
    "and carried to the audit stream behind it. Empty: audit-outbox.sqlite3 in "
    "CANDOR_MATCHER_DATA_DIR with the embedded gallery; with the Qdrant server, no outbox (each "
    "search's record is stored on the audit stream before the answer); give it a persistent volume",
    "",
)
QDRANT_URL = Setting(
    "CANDOR_QDRANT_URL", "Qdrant server URL, http:// or https://", "", required_if=(MATCHER_BACKEND, "server")
)
QDRANT_API_KEY = Setting("CANDOR_QDRANT_API_KEY", "Qdrant API key (https only)", "", secret=True)
QDRANT_SHARDS = int_setting("CANDOR_QDRANT_SHARDS", "shards of a new collection", 1, 1, 1024)
QDRANT_REPLICAS = int_setting("CANDOR_QDRANT_REPLICAS", "replication factor of a new collection", 1, 1, 16)

MATCHER_OPTIMIZE_AFTER_S = float_setting(
    "CANDOR_MATCHER_OPTIMIZE_AFTER_S",
    "quiet seconds after gallery writes before the embedded index is quantized (searches stay exact)",
    5.0,
    0.1,
    3600.0,
)
AUDIT_STREAM_REPLICAS = int_setting(
    "CANDOR_AUDIT_STREAM_REPLICAS", "replicas of the audit JetStream stream when it is created", 1, 1, 5
)
AUDIT_BACKEND = Setting(
    "CANDOR_AUDIT_BACKEND", "where the chain is kept", "sqlite", "choice", choices=("sqlite", "postgres")
)
AUDIT_DB = Setting("CANDOR_AUDIT_DB", "SQLite file of the audit chain", "", required_if=(AUDIT_BACKEND, "sqlite"))
AUDIT_POSTGRES_DSN_FILE = Setting(
    "CANDOR_AUDIT_POSTGRES_DSN_FILE",
    "file holding the libpq connection string of the audit database",
    "",
    "file",
    required_if=(AUDIT_BACKEND, "postgres"),
    secret=True,
)
AUDIT_POSTGRES_PLAINTEXT = Setting(
    "CANDOR_AUDIT_POSTGRES_PLAINTEXT",
    "allow a PostgreSQL connection to a network host without sslmode=require or stronger",
    "loopback",
    "choice",
    choices=("loopback", "allow"),
)
AUDIT_SIGNING_KEY_FILE = Setting(
    "CANDOR_AUDIT_SIGNING_KEY_FILE",
    "Ed25519 private key (PEM) that signs every record and checkpoint (`candor secrets init` makes one)",
    None,
    "file",
    secret=True,
)
AUDIT_CHECKPOINT_INTERVAL_S = float_setting(
    "CANDOR_AUDIT_CHECKPOINT_INTERVAL_S", "seconds between signed checkpoints of a moving head", 60.0, 1.0, 86400.0
)
AUDIT_FEED_MAX_AGE_DAYS = int_setting(
    "CANDOR_AUDIT_FEED_MAX_AGE_DAYS",
    "days the event feed (stream CANDOR_EVENTS) keeps an event for integrations to read or replay",
    30,
    1,
    3650,
)
AUDIT_FETCH_BATCH = int_setting(
    "CANDOR_AUDIT_FETCH_BATCH",
    "audit events pulled from JetStream at once, and appended to the chain in one transaction",
    64,
    1,
    1000,
)

GATEWAY_JWT_ISSUER = Setting("CANDOR_GATEWAY_JWT_ISSUER", "the `iss` every bearer token must carry")
GATEWAY_JWT_AUDIENCE = Setting(
    "CANDOR_GATEWAY_JWT_AUDIENCE", "the `aud` every bearer token must carry", "candor-gateway"
)
GATEWAY_JWT_KEYS_FILE = Setting(
    "CANDOR_GATEWAY_JWT_KEYS_FILE",
    "PEM file of the public keys (Ed25519 or RSA) whose signatures on tokens are trusted",
    "",
    "file",
)
GATEWAY_JWT_KEYS = Setting("CANDOR_GATEWAY_JWT_KEYS", "the same public keys as PEM text, instead of the file", "")
GATEWAY_JWT_MAX_TTL_S = int_setting(
    "CANDOR_GATEWAY_JWT_MAX_TTL_S", "longest token lifetime (exp - iat) accepted", 86400, 60, 2_592_000
)
GATEWAY_JWT_LEEWAY_S = int_setting("CANDOR_GATEWAY_JWT_LEEWAY_S", "clock skew allowed on exp and nbf", 30, 0, 300)
GATEWAY_POLICY_FILE = Setting(
    "CANDOR_GATEWAY_POLICY_FILE",
    "the search policy (policy.yaml): purposes, authorisation, candidates, thresholds, quality, quotas, "
    "retention, reviews",
    None,
    "file",
)
GATEWAY_POLICY_RELOAD_S = float_setting(
    "CANDOR_GATEWAY_POLICY_RELOAD_S", "seconds between checks of the policy file for a change", 10.0, 1.0, 3600.0
)
GATEWAY_PHOTO_KEY_FILE = Setting(
    "CANDOR_GATEWAY_PHOTO_KEY_FILE",
    "file holding the AES-256 key (base64) that encrypts the stored gallery photos and retained probes",
    None,
    "file",
    secret=True,
)
PHOTO_STORE_REPLICAS = int_setting(
    "CANDOR_PHOTO_STORE_REPLICAS", "replicas of the photo object store when it is created", 1, 1, 5
)
GATEWAY_RETENTION_SWEEP_S = float_setting(
    "CANDOR_GATEWAY_RETENTION_SWEEP_S",
    "seconds between sweeps for probes whose retention ended and for unfinished imports (rejected "
    "items' photos taken back, an import whose photos all have results recorded finished)",
    3600.0,
    1.0,
    86400.0,
)
GATEWAY_MAX_IMAGE_BYTES = int_setting(
    "CANDOR_GATEWAY_MAX_IMAGE_BYTES", "largest photo accepted", 12 << 20, 1024, 64 << 20
)
GATEWAY_MIN_ENROL_FACE_PX = int_setting(
    "CANDOR_GATEWAY_MIN_ENROL_FACE_PX", "smallest face, in pixels, enrolled", 60, 20, 2000
)
GATEWAY_MIN_ENROL_BLUR = float_setting(
    "CANDOR_GATEWAY_MIN_ENROL_BLUR", "lowest sharpness (Laplacian variance of the chip) enrolled", 10.0, 0.0, 10_000.0
)
GATEWAY_IMPORT_BACKLOG = int_setting(
    "CANDOR_GATEWAY_IMPORT_BACKLOG",
    "queued import photos before submissions get RESOURCE_EXHAUSTED",
    2000,
    10,
    1_000_000,
)
GATEWAY_MAX_INFLIGHT = int_setting(
    "CANDOR_GATEWAY_MAX_INFLIGHT", "photos processed at once before RESOURCE_EXHAUSTED", 16, 1, 10_000
)
GATEWAY_HEDGE_AFTER_S = float_setting(
    "CANDOR_GATEWAY_HEDGE_AFTER_S",
    "seconds a detection or embedding may go unanswered before it is asked again (another replica, if any, "
    "may answer); 0: wait the whole request timeout",
    5.0,
    0.0,
    600.0,
)
GATEWAY_ALLOW_UNCALIBRATED = Setting(
    "CANDOR_GATEWAY_ALLOW_UNCALIBRATED", "serve searches with an uncalibrated model (development only)", "false",
    "choice", choices=("true", "false"),
)  # fmt: skip
GATEWAY_CALIBRATION_RULE = Setting(
    "CANDOR_GATEWAY_CALIBRATION_RULE",
    "the rule a model's calibration must follow to be searched with: any, or every-group (each group of "
    "the labelled data held to the target FMR and FPIR: candor model calibrate --per-group)",
    "any",
    "choice",
    choices=("any", "every-group"),
)
GATEWAY_MODEL_REGISTRY = Setting(
    "CANDOR_MODEL_REGISTRY",
    "folder of model calibration records",
    "",
    required_if=(GATEWAY_ALLOW_UNCALIBRATED, "false"),
)

SERVICES: dict[str, tuple[Setting, ...]] = {
    "detector": (
        SERVICE_TOKEN_SHA256_FILE,
        DETECTOR_ENGINE,
        DETECTOR_MAX_IMAGE_BYTES,
        DETECTOR_MAX_PIXELS,
        DETECTOR_WORKING_PIXELS,
        DETECTOR_THREADS,
        DLIB_MODEL_DIR,
        MODEL_FILES_DIR,
        DETECTOR_MODEL_PACK,
        ACCEPT_MODEL_LICENCES,
        ONNX_PROVIDERS,
        *IMPORT_SETTINGS,
    ),
    "embedder": (
        SERVICE_TOKEN_SHA256_FILE,
        EMBEDDER_ENGINE,
        EMBEDDER_THRESHOLD,
        EMBEDDER_MAX_BATCH,
        DLIB_MODEL_DIR,
        MODEL_FILES_DIR,
        MODEL_PACK,
        ACCEPT_MODEL_LICENCES,
        ONNX_PROVIDERS,
        *IMPORT_SETTINGS,
    ),
    "matcher": (
        SERVICE_TOKEN_SHA256_FILE,
        MATCHER_BACKEND,
        MATCHER_DATA_DIR,
        MATCHER_AUDIT_OUTBOX,
        QDRANT_URL,
        QDRANT_API_KEY,
        QDRANT_SHARDS,
        QDRANT_REPLICAS,
        MATCHER_OPTIMIZE_AFTER_S,
        *IMPORT_SETTINGS,
    ),
    "audit": (
        SERVICE_TOKEN_SHA256_FILE,
        AUDIT_BACKEND,
        AUDIT_DB,
        AUDIT_POSTGRES_DSN_FILE,
        AUDIT_POSTGRES_PLAINTEXT,
        AUDIT_SIGNING_KEY_FILE,
        AUDIT_CHECKPOINT_INTERVAL_S,
        AUDIT_FETCH_BATCH,
        AUDIT_STREAM_REPLICAS,
        AUDIT_FEED_MAX_AGE_DAYS,
    ),
    "gateway": (
        GATEWAY_JWT_ISSUER,
        GATEWAY_JWT_AUDIENCE,
        GATEWAY_JWT_KEYS_FILE,
        GATEWAY_JWT_KEYS,
        GATEWAY_JWT_MAX_TTL_S,
        GATEWAY_JWT_LEEWAY_S,
        GATEWAY_POLICY_FILE,
        GATEWAY_POLICY_RELOAD_S,
        GATEWAY_PHOTO_KEY_FILE,
        PHOTO_STORE_REPLICAS,
        GATEWAY_RETENTION_SWEEP_S,
        GATEWAY_MAX_IMAGE_BYTES,
        GATEWAY_MIN_ENROL_FACE_PX,
        GATEWAY_MIN_ENROL_BLUR,
        GATEWAY_IMPORT_BACKLOG,
        GATEWAY_MAX_INFLIGHT,
        GATEWAY_HEDGE_AFTER_S,
        GATEWAY_ALLOW_UNCALIBRATED,
        GATEWAY_MODEL_REGISTRY,
        GATEWAY_CALIBRATION_RULE,
        AUDIT_STREAM_REPLICAS,
        INGEST_STREAM_REPLICAS,
    ),
}


#: The reviewer web app: on no bus and serving no gRPC, it reads none of COMMON's settings but the
#: tracing ones. It checks tokens as the gateway does, so it reads the gateway's token settings.
REVIEW_ADDRESS = Setting("CANDOR_REVIEW_ADDRESS", "host:port the reviewer web app listens on (HTTP)", "127.0.0.1:8443")
REVIEW_TLS_CERT = file_setting("CANDOR_REVIEW_TLS_CERT", "PEM certificate chain for serving the web app over HTTPS")
REVIEW_TLS_KEY = file_setting(
    "CANDOR_REVIEW_TLS_KEY", "PEM private key for serving the web app over HTTPS", secret=True
)
REVIEW_PLAINTEXT = Setting(
    "CANDOR_REVIEW_PLAINTEXT",
    "allow plain HTTP on a non-loopback address (only behind an ingress that terminates TLS)",
    "loopback",
    "choice",
    choices=("loopback", "allow"),
)
REVIEW_GATEWAY = Setting("CANDOR_REVIEW_GATEWAY", "host:port of the gateway's gRPC API")
REVIEW_GATEWAY_CA = file_setting(
    "CANDOR_REVIEW_GATEWAY_CA", "CA bundle that signed the gateway's certificate; empty: plaintext gRPC"
)
REVIEW_GATEWAY_PLAINTEXT = Setting(
    "CANDOR_REVIEW_GATEWAY_PLAINTEXT",
    "allow plaintext gRPC to a non-loopback gateway (only behind a mesh that encrypts)",
    "loopback",
    "choice",
    choices=("loopback", "allow"),
)
REVIEW_SESSION_KEY_FILE = Setting(
    "CANDOR_REVIEW_SESSION_KEY_FILE",
    "file holding the AES-256 key (base64) that seals session cookies (`candor secrets init` makes one)",
    None,
    "file",
    secret=True,
)
REVIEW_SESSION_TTL_S = int_setting(
    "CANDOR_REVIEW_SESSION_TTL_S", "longest session, in seconds (never past the token's own expiry)", 28800, 300, 86400
)
REVIEW_OIDC_ISSUER = Setting(
    "CANDOR_REVIEW_OIDC_ISSUER", "the OpenID Connect provider's issuer URL; empty: sign-in with a token only", ""
)
REVIEW_OIDC_CLIENT_ID = Setting(
    "CANDOR_REVIEW_OIDC_CLIENT_ID", "the web app's client id at the OpenID Connect provider", ""
)
REVIEW_OIDC_CLIENT_SECRET_FILE = file_setting(
    "CANDOR_REVIEW_OIDC_CLIENT_SECRET_FILE", "file holding the web app's OpenID Connect client secret", secret=True
)
REVIEW_PUBLIC_URL = Setting(
    "CANDOR_REVIEW_PUBLIC_URL", "the web app's address as browsers reach it (OpenID Connect redirects)", ""
)
WEB_SERVICES: dict[str, tuple[Setting, ...]] = {
    "review": (
        REVIEW_ADDRESS,
        REVIEW_TLS_CERT,
        REVIEW_TLS_KEY,
        REVIEW_PLAINTEXT,
        REVIEW_GATEWAY,
        REVIEW_GATEWAY_CA,
        REVIEW_GATEWAY_PLAINTEXT,
        REVIEW_SESSION_KEY_FILE,
        REVIEW_SESSION_TTL_S,
        GATEWAY_JWT_ISSUER,
        GATEWAY_JWT_AUDIENCE,
        GATEWAY_JWT_KEYS_FILE,
        GATEWAY_JWT_KEYS,
        GATEWAY_JWT_MAX_TTL_S,
        GATEWAY_JWT_LEEWAY_S,
        REVIEW_OIDC_ISSUER,
        REVIEW_OIDC_CLIENT_ID,
        REVIEW_OIDC_CLIENT_SECRET_FILE,
        REVIEW_PUBLIC_URL,
        REQUEST_TIMEOUT_S,
        METRICS_ADDRESS,
        *OTEL,
    ),
}


def settings_for(service: str) -> tuple[Setting, ...]:
    """Every setting ``service`` reads: the shared ones and its own (a web service's own only)."""
    if service in WEB_SERVICES:
        return WEB_SERVICES[service]
    return COMMON + SERVICES[service]


def check_environment(service: str, environ: dict[str, str]) -> list[str]:
    """Problems with the settings a deployment gives ``service``: unknown names and missing required ones.

    Values are not checked here (a deployment may name files that exist only in the container);
    the service checks them at start-up.
    """
    known = {s.name: s for s in settings_for(service)}
    problems = [f"{service}: {name} is not a setting {service} reads" for name in sorted(environ) if name not in known]
    return problems + [f"{service}: {why}" for setting in known.values() if (why := setting.missing(environ))]
