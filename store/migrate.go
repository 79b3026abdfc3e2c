package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ErrSchemaTooNew is returned by Open for a database written by a newer
// hub: its schema version is past the last migration this build knows.
var ErrSchemaTooNew = errors.New("database schema is newer than this hub")

// migrations are applied in order; migration i brings the schema to
// version i+1. Never edit one that has shipped: append a new one.
var migrations = []string{
	// 1: the initial schema. Times are Unix nanoseconds (0: none).
	`
CREATE TABLE users (
	name    TEXT PRIMARY KEY,
	role    TEXT NOT NULL,
	created INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE scram (
	user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
	mechanism  TEXT NOT NULL,
	salt       BLOB NOT NULL,
	iterations INTEGER NOT NULL,
	stored_key BLOB NOT NULL,
	server_key BLOB NOT NULL,
	PRIMARY KEY (user, mechanism)
) WITHOUT ROWID;

CREATE TABLE tokens (
	hash    BLOB PRIMARY KEY,
	user    TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
	expires INTEGER NOT NULL,
	created INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tokens_user ON tokens(user);

CREATE TABLE acl (
	principal TEXT NOT NULL,
	pos       INTEGER NOT NULL,
	action    TEXT NOT NULL,
	filter    TEXT NOT NULL,
	allow     INTEGER NOT NULL,
	PRIMARY KEY (principal, pos)
) WITHOUT ROWID;

CREATE TABLE devices (
	id        TEXT PRIMARY KEY,
	name      TEXT NOT NULL,
	protocol  TEXT NOT NULL,
	metadata  TEXT NOT NULL,
	psk       BLOB,
	online    INTEGER NOT NULL DEFAULT 0,
	last_seen INTEGER NOT NULL DEFAULT 0,
	created   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE kv (
	bucket TEXT NOT NULL,
	key    TEXT NOT NULL,
	value  BLOB NOT NULL,
	PRIMARY KEY (bucket, key)
) WITHOUT ROWID;

CREATE TABLE retained (
	topic    TEXT PRIMARY KEY,
	envelope BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE subscriptions (
	id      TEXT PRIMARY KEY,
	filters TEXT NOT NULL,
	qos     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE queue (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	subscriber TEXT NOT NULL,
	envelope   BLOB NOT NULL
);
CREATE INDEX queue_subscriber ON queue(subscriber, seq);
`,
	// 2: telemetry history.
	`
CREATE TABLE history (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	topic    TEXT NOT NULL,
	time     INTEGER NOT NULL,
	envelope BLOB NOT NULL
);
CREATE INDEX history_topic_time ON history(topic, time);
CREATE INDEX history_time ON history(time);
`,
	// 3: each queued envelope's Size (topic and payload bytes), for the
	// byte bound of durable queues. Rows queued before it count their
	// encoded length, a little more.
	`
ALTER TABLE queue ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE queue SET size = length(envelope);
`,
	// 4: a queued envelope is stored once, in messages, and each
	// subscriber's queue refers to it at the subscriber's own sequence
	// numbers (the old global ones keep their order); subscriptions keep
	// their filters with options.
	`
CREATE TABLE messages (
	id       INTEGER PRIMARY KEY,
	envelope BLOB NOT NULL
);
CREATE TABLE queue4 (
	subscriber TEXT NOT NULL,
	seq        INTEGER NOT NULL,
	msg        INTEGER NOT NULL,
	size       INTEGER NOT NULL,
	PRIMARY KEY (subscriber, seq)
) WITHOUT ROWID;
INSERT INTO messages(id, envelope) SELECT seq, envelope FROM queue;
INSERT INTO queue4(subscriber, seq, msg, size) SELECT subscriber, seq, seq, size FROM queue;
DROP TABLE queue;
ALTER TABLE queue4 RENAME TO queue;
CREATE INDEX queue_msg ON queue(msg);
ALTER TABLE subscriptions ADD COLUMN specs TEXT NOT NULL DEFAULT '';
`,
	// 5: an envelope queued for one subscriber only is kept in its queue
	// row (msg 0), a row written and deleted instead of two.
	`
ALTER TABLE queue ADD COLUMN envelope BLOB;
`,
	// 6: numeric history (package history): a series per topic and field,
	// its points, and the archive of the readings' payloads for XEP-0313.
	// Counts and sizes are kept beside them so retention never counts rows.
	`
CREATE TABLE history_topics (
	id            INTEGER PRIMARY KEY,
	topic         TEXT NOT NULL UNIQUE,
	archived      INTEGER NOT NULL DEFAULT 0,
	archive_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE series (
	id     INTEGER PRIMARY KEY,
	topic  INTEGER NOT NULL REFERENCES history_topics(id) ON DELETE CASCADE,
	field  TEXT NOT NULL,
	unit   TEXT NOT NULL DEFAULT '',
	points INTEGER NOT NULL DEFAULT 0,
	UNIQUE (topic, field)
);
CREATE TABLE points (
	series INTEGER NOT NULL,
	time   INTEGER NOT NULL,
	value  REAL NOT NULL,
	PRIMARY KEY (series, time)
) WITHOUT ROWID;
CREATE TABLE archive (
	topic        INTEGER NOT NULL,
	time         INTEGER NOT NULL,
	id           TEXT NOT NULL,
	content_type TEXT NOT NULL,
	payload      BLOB NOT NULL,
	PRIMARY KEY (topic, time, id)
) WITHOUT ROWID;
`,
	// 7: the metadata of the file store (package files keeps the bytes, content
	// addressed by sha256). share is the unguessable token of the file's
	// unauthenticated GET URL ("" when it has none).
	`
CREATE TABLE files (
	name         TEXT PRIMARY KEY,
	size         INTEGER NOT NULL,
	content_type TEXT NOT NULL,
	sha256       TEXT NOT NULL,
	uploader     TEXT NOT NULL,
	share        TEXT NOT NULL DEFAULT '',
	created      INTEGER NOT NULL,
	expires      INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX files_sha256 ON files(sha256);
CREATE INDEX files_uploader ON files(uploader);
CREATE INDEX files_expires ON files(expires) WHERE expires > 0;
CREATE UNIQUE INDEX files_share ON files(share) WHERE share != '';
`,
	// 8: the commands a device declares (package devices: a JSON array of
	// {name, description, params}; '' when none were declared).
	`ALTER TABLE devices ADD COLUMN commands TEXT NOT NULL DEFAULT '';`,
	// 9: the principal a durable subscription belongs to, whose queued-bytes
	// quota its queue counts against ('': nobody's).
	`ALTER TABLE subscriptions ADD COLUMN principal TEXT NOT NULL DEFAULT '';`,
	// 10: the index of queue.msg leaves out the rows that keep their own
	// envelope (msg 0, one subscriber: the durable hot path), whose every
	// insert and delete updated it for nothing.
	`DROP INDEX queue_msg; CREATE INDEX queue_msg ON queue(msg) WHERE msg <> 0;`,
}

// migrate brings the schema up to len(ms) in one transaction, refusing a
// database whose version is past it.
func (s *Store) migrate(ctx context.Context, ms []string) error {
	return s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var v int
		if err := tx.QueryRowContext(ctx,
			`SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
			return fmt.Errorf("migrate: read schema version: %w", err)
		}
		if v > len(ms) {
			return fmt.Errorf("%w: schema version %d, this hub knows up to %d; run a newer hub or restore a backup",
				ErrSchemaTooNew, v, len(ms))
		}
		for i := v; i < len(ms); i++ {
			if _, err := tx.ExecContext(ctx, ms[i]); err != nil {
				return fmt.Errorf("migrate: to version %d: %w", i+1, err)
			}
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO schema_migrations(version) VALUES (?)`, i+1); err != nil {
				return fmt.Errorf("migrate: record version %d: %w", i+1, err)
			}
		}
		return nil
	})
}

// SchemaVersion returns the database's schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.r.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: schema version: %w", err)
	}
	return v, nil
}
