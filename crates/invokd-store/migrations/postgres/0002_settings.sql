-- Values every replica sharing the store must agree on, set once by the first to start:
-- the URL-signing secret, the webhook signing key, the admin token.
CREATE TABLE settings (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    created_at bigint NOT NULL
);
