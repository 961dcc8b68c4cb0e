-- Values every process sharing the store must agree on, set once by the first to start:
-- the URL-signing secret, the webhook signing key, the admin token.
CREATE TABLE settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
