"""The relay: an HTTP store of sealed envelopes by opaque mailbox id, and its client.

    auth      request signatures and the checks built on them (pure, no I/O)
    config    `RelayConfig`, the one frozen settings object, and `load_root_public`
    storage   the `EnvelopeStorage` Protocol and its two backends, SQLite plus files
              and PostgreSQL (envelopes under a quota and a retention period, their
              tombstones, directory records by version, gateway revocations)
    server    the aiohttp application, `RelayServer` and `serve_forever`
    metrics   `RelayMetrics` (Prometheus counters, one registry per app) and `RelayStatus`
    operator  the operator routes: /healthz, /metrics, the /status page, /status.json
    client    `RelayClient`, what a gateway uses to deposit, fetch and publish

Errors the relay answers with (their HTTP status travels with them):

    BridgeError
    ├── RequestError            4xx, 503 or 507: the relay refuses this request (auth.py)
    │   ├── RequestAuthError    401: signature missing, malformed, stale or wrong;
    │   │                       403: a valid key that is not allowed to do this
    │   ├── StorageFull         507: larger than the quota, or the disk is full (storage/)
    │   └── StorageUnavailable  503: the relay's database cannot be reached (storage/)
    └── StorageSchemaError      the database was written by a newer relay (storage/)

The client raises `bridge.errors.RelayUnavailable` / `RelayRejected`.

A relay never sees an address or any plaintext, and nothing in this package
writes one to disk or to a log.
"""
