-- Seals (issue 7, tamper evidence; docs/GATEWAY.md "Seals and verify"). Each closed local day
-- of a workshop, enterprise or park is sealed by the gateway holding the roll-up lease: a
-- signed document naming the SHA-256 of the period's evidence, of its batch manifest and the
-- indicator values. The store keeps the signed document, the signature, the evidence and the
-- manifest as text and never interprets them.
--
-- One seal chain per gateway key (`signer`, `seq`, `prev`); versions per (entity, period): a
-- later version supersedes the earlier one, which stays, with `superseded_by` (the only column
-- ever updated; it is not part of the signed document) naming its successor.

CREATE TABLE seals (
    hash          TEXT    PRIMARY KEY NOT NULL,
    signer        TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    prev          TEXT    NOT NULL,
    entity        TEXT    NOT NULL,
    from_ms       INTEGER NOT NULL,
    to_ms         INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    supersedes    TEXT,
    superseded_by TEXT,
    sealed_at     INTEGER NOT NULL,
    doc           TEXT    NOT NULL,
    sig           TEXT    NOT NULL,
    manifest      TEXT    NOT NULL,
    evidence      TEXT    NOT NULL
);
CREATE UNIQUE INDEX seals_signer_seq ON seals (signer, seq);
CREATE UNIQUE INDEX seals_period ON seals (entity, from_ms, to_ms, version);

-- The sealer's bookkeeping between passes (what it has seen of the batches and the audit
-- trail, sealed days waiting for a re-check), one JSON document per name.
CREATE TABLE seal_state (
    name       TEXT    PRIMARY KEY NOT NULL,
    doc        TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
