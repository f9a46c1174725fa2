package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "github.com/lib/pq" // the PostgreSQL driver (pure Go)
)

// pgStore keeps the notes in PostgreSQL.
type pgStore struct {
	db *sql.DB
}

func openStore(dsn string) (*pgStore, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	return &pgStore{db: db}, nil
}

func (s *pgStore) Close() error { return s.db.Close() }

func (s *pgStore) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS notes (
		id bigserial PRIMARY KEY,
		text text NOT NULL,
		created timestamptz NOT NULL DEFAULT now())`)
	return err
}

func (s *pgStore) Ping(ctx context.Context) error {
	return s.db.QueryRowContext(ctx, "SELECT 1").Scan(new(int))
}

func (s *pgStore) List(ctx context.Context) ([]Note, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, text, created FROM notes ORDER BY id DESC LIMIT 1000")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Note
	for rows.Next() {
		var n Note
		if err := rows.Scan(&n.ID, &n.Text, &n.Created); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func (s *pgStore) Add(ctx context.Context, text string) (Note, error) {
	n := Note{Text: text}
	err := s.db.QueryRowContext(ctx, "INSERT INTO notes (text) VALUES ($1) RETURNING id, created", text).Scan(&n.ID, &n.Created)
	return n, err
}
