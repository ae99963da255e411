-- Dashboard users and their sessions (issue 7). Passwords are stored only as argon2id PHC
-- strings; a session is stored only as the SHA-256 of its id (the cookie) and of its CSRF
-- token. User changes are audited (kind `user`) in the same transaction; sessions are not
-- (signing in and out changes no data).

CREATE TABLE users (
    name                TEXT COLLATE "C" PRIMARY KEY,
    role                TEXT NOT NULL,
    password_hash       TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    created_by          TEXT NOT NULL,
    disabled_at         BIGINT,
    password_changed_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_name  TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    csrf_hash  TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_last_seen ON sessions (last_seen);
