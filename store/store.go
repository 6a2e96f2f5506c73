// Package store is caseroom's persistence: the SQLite or PostgreSQL database, its migrations, the durable inbox of
// homeserver events and the queue of outgoing Matrix messages.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // registers the sqlite3-fk-wal driver
	"go.mau.fi/util/random"

	_ "github.com/lib/pq" // registers the postgres driver
)

//go:embed upgrades/*.sql
var upgrades embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgrades, "upgrades").Finish()

// Config says which database to open.
type Config struct {
	Type         string // sqlite3-fk-wal or postgres
	URI          string
	MaxOpenConns int
	MaxIdleConns int
}

// Store is the open database with one query type per table.
type Store struct {
	DB        *dbutil.Database
	Inbox     *InboxQuery
	Outgoing  *OutgoingQuery
	Device    *BotDeviceQuery
	Roles     *RoleQuery
	Cases     *CaseQuery
	Audit     *AuditQuery
	Effects   *EffectQuery
	Plans     *PlanQuery
	CheckIns  *CheckInQuery
	Guided    *GuidedQuery
	Reminders *ReminderQuery
	Alerts    *AlertQuery
	EHR       *EHROutboxQuery
	EHRReads  *EHRReadQuery
	Filings   *FilingQuery
	// EarlyRedactions are redactions that arrived before the event they redact.
	EarlyRedactions *EarlyRedactionQuery

	// InstanceID is a random id made when the database was created; it keeps outgoing transaction IDs unique
	// even when a homeserver has seen an earlier database of the same bot.
	InstanceID string
}

// DefaultMaxOpenConns is the connection limit when the config leaves it at 0. SQLite lets one connection write at
// a time and makes the others wait in its busy handler, which sleeps for milliseconds between tries; with a single
// connection, caseroom's writers queue in the connection pool instead and each starts the moment the previous one
// ends. PostgreSQL writes concurrently.
func DefaultMaxOpenConns(dbType string) int {
	if dbType == "postgres" {
		return 10
	}
	return 1
}

// sqliteStatementCache is how many prepared statements each SQLite connection keeps: caseroom runs a few dozen
// distinct statements over and over, and preparing them anew each time costs more than running most of them.
const sqliteStatementCache = 128

// withStatementCache adds the go-sqlite3 statement cache to an SQLite URI that does not set its size itself.
func withStatementCache(uri string) string {
	_, query, _ := strings.Cut(uri, "?")
	if values, err := url.ParseQuery(query); err == nil && values.Has("_stmt_cache_size") {
		return uri
	}
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return fmt.Sprintf("%s%s_stmt_cache_size=%d", uri, sep, sqliteStatementCache)
}

// Open opens the database, upgrades it to the latest schema and loads the instance id.
func Open(ctx context.Context, cfg Config, log zerolog.Logger) (*Store, error) {
	maxOpen := cfg.MaxOpenConns
	if maxOpen <= 0 {
		maxOpen = DefaultMaxOpenConns(cfg.Type)
	}
	uri := cfg.URI
	if cfg.Type != "postgres" {
		uri = withStatementCache(uri)
	}
	db, err := dbutil.NewFromConfig("caseroom", dbutil.Config{
		PoolConfig: dbutil.PoolConfig{
			Type:         cfg.Type,
			URI:          uri,
			MaxOpenConns: maxOpen,
			MaxIdleConns: cfg.MaxIdleConns,
		},
	}, dbutil.ZeroLogger(log.With().Str("db_section", "main").Logger()))
	if err != nil {
		return nil, fmt.Errorf("failed to open %s database: %w", cfg.Type, err)
	}
	db.UpgradeTable = upgradeTable
	if err = db.RawDB.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to connect to %s database: %w", cfg.Type, err)
	}
	if err = db.Upgrade(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to upgrade database: %w", err)
	}
	st := &Store{DB: db}
	st.Inbox = &InboxQuery{db: db}
	st.Outgoing = &OutgoingQuery{db: db}
	st.Device = &BotDeviceQuery{db: db}
	st.Roles = &RoleQuery{db: db}
	st.Cases = &CaseQuery{db: db}
	st.Audit = &AuditQuery{db: db}
	st.Effects = &EffectQuery{db: db}
	st.Plans = &PlanQuery{db: db}
	st.CheckIns = &CheckInQuery{db: db}
	st.Guided = &GuidedQuery{db: db}
	st.Reminders = &ReminderQuery{db: db}
	st.Alerts = &AlertQuery{db: db}
	st.EHR = &EHROutboxQuery{db: db}
	st.EHRReads = &EHRReadQuery{db: db}
	st.Filings = &FilingQuery{db: db}
	st.EarlyRedactions = &EarlyRedactionQuery{db: db}
	if st.InstanceID, err = loadInstanceID(ctx, db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return st, nil
}

// Close closes the database.
func (s *Store) Close() error {
	return s.DB.Close()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.DB.RawDB.PingContext(ctx)
}

func loadInstanceID(ctx context.Context, db *dbutil.Database) (string, error) {
	var instanceID string
	err := db.QueryRow(ctx, "SELECT id FROM instance LIMIT 1").Scan(&instanceID)
	if errors.Is(err, sql.ErrNoRows) {
		instanceID = random.String(10)
		_, err = db.Exec(ctx, "INSERT INTO instance (id, created_at) VALUES ($1, $2)", instanceID, time.Now().UnixMilli())
		if err != nil {
			return "", fmt.Errorf("failed to store instance id: %w", err)
		}
		return instanceID, nil
	} else if err != nil {
		return "", fmt.Errorf("failed to load instance id: %w", err)
	}
	return instanceID, nil
}
