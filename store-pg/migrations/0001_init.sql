-- Shopfloor gateway store, PostgreSQL dialect. Same tables and meaning as the SQLite backend
-- (store-sqlite/migrations/0001_init.sql); see store-pg/src/lib.rs for the invariants.
--
-- Conventions:
-- * Times are BIGINT milliseconds since the Unix epoch (UTC), never TIMESTAMPTZ: both backends
--   and the wire format use the same integers, so nothing is converted or rounded.
-- * Device and entity path columns are COLLATE "C" (byte order): the prefix filter
--   `device = p OR (device >= p || '/' AND device < p || '0')` is then a plain btree range, and
--   the order is the same on every server whatever its locale.
-- * JSON documents (registry, audit, inputs) are TEXT holding the exact JSON the gateway wrote;
--   the store never interprets them.
-- * Append-mostly time columns used only by retention (purge) get BRIN indexes: a few pages,
--   nearly free on insert.
-- * No CHECK constraints on ingested data: the gateway validates batches before they reach the
--   store, and a constraint failing inside `ingest` would abort the whole call (and every MQTT
--   redelivery of it) instead of one batch.
--
-- Once released, this file never changes: later schema changes are new migrations.

-- Raw batches as received (payload verbatim, signature included). One row per (agent, seq).
CREATE TABLE batches (
    agent     TEXT COLLATE "C" NOT NULL,
    seq       BIGINT NOT NULL,
    body_hash TEXT NOT NULL,
    prev      TEXT NOT NULL,
    sealed    BIGINT NOT NULL,
    from_ms   BIGINT NOT NULL,
    to_ms     BIGINT NOT NULL,
    received  BIGINT NOT NULL,
    payload   BYTEA NOT NULL,
    PRIMARY KEY (agent, seq)
);
-- chain_ranges (to_ms > from) and purge (to_ms < before).
CREATE INDEX batches_to ON batches (to_ms);

-- Per-agent summary of `batches`, maintained by ingest in the same statement that inserts a
-- batch (and recomputed per agent by purge): agent_heads without counting every batch.
-- last_seq/last_hash/last_to/last_received describe the batch with the highest stored seq.
CREATE TABLE heads (
    agent         TEXT COLLATE "C" PRIMARY KEY,
    batches       BIGINT NOT NULL,
    first_seq     BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL,
    last_hash     TEXT NOT NULL,
    last_to       BIGINT NOT NULL,
    last_received BIGINT NOT NULL
);

-- Raw samples: exactly one of num, text, err is set (by the gateway).
CREATE TABLE samples (
    device  TEXT COLLATE "C" NOT NULL,
    point   TEXT COLLATE "C" NOT NULL,
    t       BIGINT NOT NULL,
    num     DOUBLE PRECISION,
    is_bool BOOLEAN NOT NULL,
    text    TEXT,
    err     TEXT,
    agent   TEXT NOT NULL,
    seq     BIGINT NOT NULL
);
CREATE INDEX samples_device_point_t ON samples (device, point, t);
CREATE INDEX samples_t ON samples USING BRIN (t);

-- Closed machine-state intervals [from_ms, to_ms). Indexed by (device, to_ms), not from_ms: the overlap
-- query `to_ms > from AND from_ms < to` then reads only intervals ending after `from`, not the
-- device's whole history (intervals of one device do not overlap, so this is also from_ms
-- order).
CREATE TABLE states (
    device  TEXT COLLATE "C" NOT NULL,
    from_ms BIGINT NOT NULL,
    to_ms   BIGINT NOT NULL,
    state   TEXT NOT NULL,
    agent   TEXT NOT NULL,
    seq     BIGINT NOT NULL
);
CREATE INDEX states_device_to ON states (device, to_ms);

-- Raw register readings of part counters and meters.
CREATE TABLE readings (
    device     TEXT COLLATE "C" NOT NULL,
    role       TEXT COLLATE "C" NOT NULL,
    point      TEXT COLLATE "C" NOT NULL,
    t          BIGINT NOT NULL,
    v          DOUBLE PRECISION NOT NULL,
    width_bits INTEGER,
    rollover   DOUBLE PRECISION,
    agent      TEXT NOT NULL,
    seq        BIGINT NOT NULL
);
CREATE INDEX readings_device_role_point_t ON readings (device, role, point, t);
CREATE INDEX readings_t ON readings USING BRIN (t);

-- Device link up/down events.
CREATE TABLE links (
    device TEXT COLLATE "C" NOT NULL,
    t      BIGINT NOT NULL,
    up     BOOLEAN NOT NULL,
    detail TEXT NOT NULL,
    agent  TEXT NOT NULL,
    seq    BIGINT NOT NULL
);
CREATE INDEX links_device_t ON links (device, t);
CREATE INDEX links_t ON links USING BRIN (t);

-- Queue of device time ranges whose roll-ups must be recomputed (oldest = lowest id).
CREATE TABLE dirty (
    id      BIGSERIAL PRIMARY KEY,
    device  TEXT COLLATE "C" NOT NULL,
    from_ms BIGINT NOT NULL,
    to_ms   BIGINT NOT NULL
);

-- Chain anomalies found at ingest (kind 'gap' or 'fork'); newest = highest id.
CREATE TABLE chain_events (
    id     BIGSERIAL PRIMARY KEY,
    agent  TEXT COLLATE "C" NOT NULL,
    seq    BIGINT NOT NULL,
    at     BIGINT NOT NULL,
    kind   TEXT NOT NULL CHECK (kind IN ('gap', 'fork')),
    detail TEXT NOT NULL
);
CREATE INDEX chain_events_agent_id ON chain_events (agent, id);

-- Payloads that failed verification (at most the first 64 KiB each).
CREATE TABLE quarantine (
    id       BIGSERIAL PRIMARY KEY,
    received BIGINT NOT NULL,
    topic    TEXT NOT NULL,
    agent    TEXT,
    seq      BIGINT,
    reason   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    payload  BYTEA NOT NULL
);
CREATE INDEX quarantine_received ON quarantine (received);

-- Roll-ups: whole buckets, replaced (never accumulated) by apply_rollups. gran is
-- 'minute' | 'hour' | 'day' | 'month'; bucket is the bucket's start instant.
CREATE TABLE rollup_states (
    device       TEXT COLLATE "C" NOT NULL,
    gran         TEXT NOT NULL,
    bucket       BIGINT NOT NULL,
    producing    BIGINT NOT NULL,
    setup        BIGINT NOT NULL,
    delay        BIGINT NOT NULL,
    idle         BIGINT NOT NULL,
    planned_down BIGINT NOT NULL,
    offline      BIGINT NOT NULL,
    PRIMARY KEY (device, gran, bucket)
);

CREATE TABLE rollup_counters (
    device   TEXT COLLATE "C" NOT NULL,
    role     TEXT COLLATE "C" NOT NULL,
    gran     TEXT NOT NULL,
    bucket   BIGINT NOT NULL,
    delta    DOUBLE PRECISION NOT NULL,
    first_t  BIGINT NOT NULL,
    last_t   BIGINT NOT NULL,
    readings BIGINT NOT NULL,
    wraps    BIGINT NOT NULL,
    resets   BIGINT NOT NULL,
    PRIMARY KEY (device, role, gran, bucket)
);
-- Bucket-range queries of one device and granularity across roles (device_buckets, clearing).
CREATE INDEX rollup_counters_device_gran_bucket ON rollup_counters (device, gran, bucket);

CREATE TABLE rollup_activity (
    device  TEXT COLLATE "C" NOT NULL,
    gran    TEXT NOT NULL,
    bucket  BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    points  BIGINT NOT NULL,
    PRIMARY KEY (device, gran, bucket)
);

-- Named leases (e.g. the roll-up worker) shared by gateway replicas.
CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);

-- Registry documents (kind: entity, agent, product, target).
CREATE TABLE registry (
    kind       TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    doc        TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);

-- Who changed what, append-only (newest = highest id); before_doc/after_doc are JSON text
-- ('null' for none).
CREATE TABLE audit (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    kind       TEXT COLLATE "C" NOT NULL,
    item       TEXT COLLATE "C" NOT NULL,
    before_doc TEXT NOT NULL,
    after_doc  TEXT NOT NULL
);
CREATE INDEX audit_item_id ON audit (item, id);

-- Economic inputs, versioned per (entity, period); the highest version is current. `id` orders
-- versions by insertion (history, newest first).
CREATE TABLE inputs (
    id      BIGSERIAL NOT NULL,
    entity  TEXT COLLATE "C" NOT NULL,
    from_ms BIGINT NOT NULL,
    to_ms   BIGINT NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    doc     TEXT NOT NULL,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    source  TEXT NOT NULL,
    PRIMARY KEY (entity, from_ms, to_ms, version)
);

-- API tokens: only the SHA-256 hash of a token is stored.
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT
);
