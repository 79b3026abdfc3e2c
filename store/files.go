package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// FileRecord is the metadata of one file of the file store (package
// files); the bytes live beside the database, content addressed by SHA256.
type FileRecord struct {
	Name        string
	Size        int64
	ContentType string
	SHA256      string // hex
	Uploader    string
	// Share is the unguessable token of the file's unauthenticated GET
	// URL ("" when it has none).
	Share   string
	Created time.Time
	Expires time.Time // zero: never
}

const fileCols = `name, size, content_type, sha256, uploader, share, created, expires`

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

type scanner interface{ Scan(dest ...any) error }

func scanFile(sc scanner) (FileRecord, error) {
	var (
		r                FileRecord
		created, expires int64
	)
	if err := sc.Scan(&r.Name, &r.Size, &r.ContentType, &r.SHA256, &r.Uploader, &r.Share, &created, &expires); err != nil {
		return FileRecord{}, err
	}
	r.Created, r.Expires = fromUnixNano(created), fromUnixNano(expires)
	return r, nil
}

// PutFile stores r, replacing the record of the same name. check, when
// not nil, runs inside the transaction with the bytes r.Uploader's other
// files take (the file r replaces left out when it is the uploader's own),
// and an error from it refuses the write: that is how a quota holds
// against concurrent uploads. old is the record r replaced, when there was
// one (replaced).
func (s *Store) PutFile(ctx context.Context, r FileRecord, check func(used int64) error) (old FileRecord, replaced bool, err error) {
	if r.Name == "" {
		return FileRecord{}, false, errors.New("store: put file: empty name")
	}
	err = s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		old, replaced = FileRecord{}, false
		o, err := scanFile(tx.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE name = ?`, r.Name))
		switch {
		case err == nil:
			old, replaced = o, true
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if check != nil {
			var used int64
			if err := tx.QueryRowContext(ctx,
				`SELECT COALESCE(SUM(size), 0) FROM files WHERE uploader = ? AND name != ?`,
				r.Uploader, r.Name).Scan(&used); err != nil {
				return err
			}
			if err := check(used); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO files(`+fileCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET size = excluded.size, content_type = excluded.content_type,
				sha256 = excluded.sha256, uploader = excluded.uploader, share = excluded.share,
				created = excluded.created, expires = excluded.expires`,
			r.Name, r.Size, r.ContentType, r.SHA256, r.Uploader, r.Share, unixNano(r.Created), unixNano(r.Expires))
		return mapErr(err)
	})
	if err != nil {
		return FileRecord{}, false, fmt.Errorf("store: put file %q: %w", r.Name, err)
	}
	return old, replaced, nil
}

// File returns the record of name (ErrNotFound).
func (s *Store) File(ctx context.Context, name string) (FileRecord, error) {
	r, err := scanFile(s.r.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE name = ?`, name))
	if err != nil {
		return FileRecord{}, fmt.Errorf("store: file %q: %w", name, notFound(err))
	}
	return r, nil
}

// FileByShare returns the record whose share token is token (ErrNotFound).
func (s *Store) FileByShare(ctx context.Context, token string) (FileRecord, error) {
	if token == "" {
		return FileRecord{}, fmt.Errorf("store: shared file: %w", ErrNotFound)
	}
	r, err := scanFile(s.r.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE share = ?`, token))
	if err != nil {
		return FileRecord{}, fmt.Errorf("store: shared file: %w", notFound(err))
	}
	return r, nil
}

// SetFileShare sets the share token of name when it has none, and returns
// the token it has afterwards (ErrNotFound).
func (s *Store) SetFileShare(ctx context.Context, name, token string) (string, error) {
	var got string
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE files SET share = ? WHERE name = ? AND share = ''`, token, name); err != nil {
			return mapErr(err)
		}
		return notFound(tx.QueryRowContext(ctx, `SELECT share FROM files WHERE name = ?`, name).Scan(&got))
	})
	if err != nil {
		return "", fmt.Errorf("store: share file %q: %w", name, err)
	}
	return got, nil
}

// DeleteFile deletes the record of name and returns it (ErrNotFound).
// match, when not nil, must approve the record found, else nothing is
// deleted and the error is ErrNotFound: the expiry sweep deletes a file
// only while it is the expired one, not a newer upload of the same name.
func (s *Store) DeleteFile(ctx context.Context, name string, match func(FileRecord) bool) (FileRecord, error) {
	var r FileRecord
	err := s.tx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		r, err = scanFile(tx.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE name = ?`, name))
		if err != nil {
			return notFound(err)
		}
		if match != nil && !match(r) {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM files WHERE name = ?`, name)
		return err
	})
	if err != nil {
		return FileRecord{}, fmt.Errorf("store: delete file %q: %w", name, err)
	}
	return r, nil
}

// Files returns up to limit records with names after after, sorted by
// name.
func (s *Store) Files(ctx context.Context, after string, limit int) ([]FileRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store: list files: limit %d: must be positive", limit)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+fileCols+` FROM files WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: list files: %w", err)
	}
	return collectFiles(rows, "list files")
}

// ExpiredFiles returns up to limit records whose expiry lies at or before
// now, the longest expired first.
func (s *Store) ExpiredFiles(ctx context.Context, now time.Time, limit int) ([]FileRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store: expired files: limit %d: must be positive", limit)
	}
	rows, err := s.r.QueryContext(ctx,
		`SELECT `+fileCols+` FROM files WHERE expires > 0 AND expires <= ? ORDER BY expires LIMIT ?`, now.UnixNano(), limit)
	if err != nil {
		return nil, fmt.Errorf("store: expired files: %w", err)
	}
	return collectFiles(rows, "expired files")
}

func collectFiles(rows *sql.Rows, what string) ([]FileRecord, error) {
	defer rows.Close()
	var out []FileRecord
	for rows.Next() {
		r, err := scanFile(rows)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", what, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	return out, nil
}

// FileUsage returns the total size of uploader's files.
func (s *Store) FileUsage(ctx context.Context, uploader string) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0) FROM files WHERE uploader = ?`, uploader).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: file usage of %q: %w", uploader, err)
	}
	return n, nil
}

// FileBlobRefs returns how many files have the content sha256 (hex).
func (s *Store) FileBlobRefs(ctx context.Context, sha256 string) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM files WHERE sha256 = ?`, sha256).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: references to blob %s: %w", sha256, err)
	}
	return n, nil
}

// FileBlobs returns the distinct contents (sha256, hex) files refer to,
// for the sweep of blobs no file names.
func (s *Store) FileBlobs(ctx context.Context) (map[string]bool, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT DISTINCT sha256 FROM files`)
	if err != nil {
		return nil, fmt.Errorf("store: file blobs: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("store: file blobs: %w", err)
		}
		out[h] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: file blobs: %w", err)
	}
	return out, nil
}
