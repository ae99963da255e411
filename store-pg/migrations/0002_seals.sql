-- Seals (issue 7, tamper evidence; docs/GATEWAY.md "Seals and verify"): same tables and
-- meaning as store-sqlite/migrations/0002_seals.sql. The signed document, the evidence and
-- the manifest are TEXT holding the exact bytes the gateway wrote (never JSONB: the signature
-- and the hashes cover those bytes).

CREATE TABLE seals (
    hash          TEXT PRIMARY KEY,
    signer        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    prev          TEXT NOT NULL,
    entity        TEXT COLLATE "C" NOT NULL,
    from_ms       BIGINT NOT NULL,
    to_ms         BIGINT NOT NULL,
    version       BIGINT NOT NULL,
    supersedes    TEXT,
    superseded_by TEXT,
    sealed_at     BIGINT NOT NULL,
    doc           TEXT NOT NULL,
    sig           TEXT NOT NULL,
    manifest      TEXT NOT NULL,
    evidence      TEXT NOT NULL
);
CREATE UNIQUE INDEX seals_signer_seq ON seals (signer, seq);
CREATE UNIQUE INDEX seals_period ON seals (entity, from_ms, to_ms, version);

-- The sealer's bookkeeping between passes, one JSON document (text) per name.
CREATE TABLE seal_state (
    name       TEXT PRIMARY KEY,
    doc        TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
