-- Shopfloor gateway store, SQLite dialect. Migration 1: the whole schema.
--
-- Conventions: times are INTEGER milliseconds since the Unix epoch (UTC); JSON documents are
-- TEXT written by serde_json (`null` for none); BOOLEAN columns hold 0/1. No CHECK constraints
-- on ingested data: the gateway validates batches before they reach the store, and a
-- constraint failing inside `ingest` would abort the whole call (and every MQTT redelivery of
-- it) instead of one batch.
--
-- Once released, this file never changes: later schema changes are new migrations.

-- --- raw batches and the hash chain ---------------------------------------------------------

-- One row per verified batch; `payload` is the MQTT payload byte for byte (kept last so the
-- other columns stay on the row's first page).
CREATE TABLE batches (
    agent     TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    body_hash TEXT    NOT NULL,
    prev      TEXT    NOT NULL,
    sealed    INTEGER NOT NULL,
    from_ms   INTEGER NOT NULL,
    to_ms     INTEGER NOT NULL,
    received  INTEGER NOT NULL,
    payload   BLOB    NOT NULL,
    PRIMARY KEY (agent, seq)
);
-- chain_ranges (windows ending after a period's start) and retention.
CREATE INDEX batches_to ON batches (to_ms);

-- Per-agent summary, maintained by ingest in the same transaction as the batch and rebuilt
-- from `batches` after a purge: agent_heads without scanning every batch.
CREATE TABLE heads (
    agent         TEXT    PRIMARY KEY NOT NULL,
    batches       INTEGER NOT NULL,
    first_seq     INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    last_hash     TEXT    NOT NULL,
    last_to       INTEGER NOT NULL,
    last_received INTEGER NOT NULL
) WITHOUT ROWID;

-- Gaps and forks seen at ingest (`kind` = 'gap' | 'fork'); `at` = the batch's receive time.
CREATE TABLE chain_events (
    id     INTEGER PRIMARY KEY,
    agent  TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    detail TEXT    NOT NULL
);
CREATE INDEX chain_events_agent ON chain_events (agent, id);

-- Payloads that failed verification (at most the first 64 KiB, cut by the gateway).
CREATE TABLE quarantine (
    id       INTEGER PRIMARY KEY,
    received INTEGER NOT NULL,
    topic    TEXT    NOT NULL,
    agent    TEXT,
    seq      INTEGER,
    reason   TEXT    NOT NULL,
    detail   TEXT    NOT NULL,
    payload  BLOB    NOT NULL
);
CREATE INDEX quarantine_received ON quarantine (received);

-- --- decoded rows (each names the batch it came from) ---------------------------------------

CREATE TABLE samples (
    device  TEXT    NOT NULL,
    point   TEXT    NOT NULL,
    t       INTEGER NOT NULL,
    num     REAL,
    is_bool BOOLEAN NOT NULL,
    text    TEXT,
    err     TEXT,
    agent   TEXT    NOT NULL,
    seq     INTEGER NOT NULL
);
CREATE INDEX samples_point ON samples (device, point, t);

-- Every (device, point) that ever delivered a sample: lets "any sample of this device in a
-- window" use samples_point (one range per point) instead of scanning the device's history.
CREATE TABLE sample_points (
    device TEXT NOT NULL,
    point  TEXT NOT NULL,
    PRIMARY KEY (device, point)
) WITHOUT ROWID;

-- Closed intervals [from_ms, to_ms). Indexed by end: a window [a, b) needs the intervals with
-- to_ms > a and from_ms < b, and roll-ups mostly look at recent windows.
CREATE TABLE states (
    device  TEXT    NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms   INTEGER NOT NULL,
    state   TEXT    NOT NULL,
    agent   TEXT    NOT NULL,
    seq     INTEGER NOT NULL
);
CREATE INDEX states_device ON states (device, to_ms);

CREATE TABLE readings (
    device     TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    point      TEXT    NOT NULL,
    t          INTEGER NOT NULL,
    v          REAL    NOT NULL,
    width_bits INT4,
    rollover   REAL,
    agent      TEXT    NOT NULL,
    seq        INTEGER NOT NULL
);
CREATE INDEX readings_series ON readings (device, role, point, t);

-- Every (device, role, point) series that ever delivered a reading: raw_slice walks these and
-- seeks readings_series once per series (window, the reading before, the reading after).
CREATE TABLE reading_series (
    device TEXT NOT NULL,
    role   TEXT NOT NULL,
    point  TEXT NOT NULL,
    PRIMARY KEY (device, role, point)
) WITHOUT ROWID;

CREATE TABLE links (
    device TEXT    NOT NULL,
    t      INTEGER NOT NULL,
    up     BOOLEAN NOT NULL,
    detail TEXT    NOT NULL,
    agent  TEXT    NOT NULL,
    seq    INTEGER NOT NULL
);
CREATE INDEX links_device ON links (device, t);

-- --- roll-ups ---------------------------------------------------------------------------------

-- Queue of [from_ms, to_ms) ranges whose roll-ups must be recomputed, oldest first by id.
CREATE TABLE dirty (
    id      INTEGER PRIMARY KEY,
    device  TEXT    NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms   INTEGER NOT NULL
);

-- One row per (device, gran, bucket[, role]), replaced whole by apply_rollups, never
-- accumulated. `gran` is 'minute' | 'hour' | 'day' | 'month'; `bucket` is the bucket's start
-- instant. Keys lead with (device, gran, bucket) so one device's buckets of a period, and the
-- clearing of a range, are one index range (role last in rollup_counters for the same reason).
CREATE TABLE rollup_states (
    device       TEXT    NOT NULL,
    gran         TEXT    NOT NULL,
    bucket       INTEGER NOT NULL,
    producing    INTEGER NOT NULL,
    setup        INTEGER NOT NULL,
    delay        INTEGER NOT NULL,
    idle         INTEGER NOT NULL,
    planned_down INTEGER NOT NULL,
    offline      INTEGER NOT NULL,
    PRIMARY KEY (device, gran, bucket)
) WITHOUT ROWID;

CREATE TABLE rollup_counters (
    device   TEXT    NOT NULL,
    role     TEXT    NOT NULL,
    gran     TEXT    NOT NULL,
    bucket   INTEGER NOT NULL,
    delta    REAL    NOT NULL,
    first_t  INTEGER NOT NULL,
    last_t   INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    wraps    INTEGER NOT NULL,
    resets   INTEGER NOT NULL,
    PRIMARY KEY (device, gran, bucket, role)
) WITHOUT ROWID;

CREATE TABLE rollup_activity (
    device  TEXT    NOT NULL,
    gran    TEXT    NOT NULL,
    bucket  INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    points  INTEGER NOT NULL,
    PRIMARY KEY (device, gran, bucket)
) WITHOUT ROWID;

-- Named leases (the roll-up worker's, when several gateways share one database).
CREATE TABLE leases (
    name     TEXT    PRIMARY KEY NOT NULL,
    holder   TEXT    NOT NULL,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- --- registry, inputs, tokens, audit --------------------------------------------------------

CREATE TABLE registry (
    kind       TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    doc        TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;

-- Append-only; `id` orders entries (newest = highest).
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    item       TEXT    NOT NULL,
    before_doc TEXT    NOT NULL,
    after_doc  TEXT    NOT NULL
);
CREATE INDEX audit_item ON audit (item, id);

-- Every version of every record is kept; the highest version of (entity, from_ms, to_ms) is
-- current. The rowid orders versions by insertion.
CREATE TABLE inputs (
    entity  TEXT    NOT NULL,
    from_ms INTEGER NOT NULL,
    to_ms   INTEGER NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    source  TEXT    NOT NULL,
    PRIMARY KEY (entity, from_ms, to_ms, version)
);

-- API tokens: only the SHA-256 of a token is stored.
CREATE TABLE tokens (
    name       TEXT    PRIMARY KEY NOT NULL,
    role       TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    revoked_at INTEGER
);
