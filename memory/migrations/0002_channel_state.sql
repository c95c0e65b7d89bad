-- Chat channels: inbound messages already taken (so a platform's redelivery after a crash is
-- answered once) and small per-channel state such as Matrix's sync token.

CREATE TABLE inbound_seen (
    channel     TEXT NOT NULL,
    room        TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    seen_at     TEXT NOT NULL,
    PRIMARY KEY (channel, room, message_id)
) WITHOUT ROWID;
CREATE INDEX inbound_seen_age ON inbound_seen (seen_at);

CREATE TABLE channel_state (
    channel     TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
