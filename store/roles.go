package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// RoleQuery reads and writes the admins and clinicians added at run time and the allowed servers added by admins.
// Admins and allowed servers from the config are not stored here.
type RoleQuery struct {
	db *dbutil.Database
}

// Clinician is a registered clinician.
type Clinician struct {
	UserID          id.UserID
	PractitionerRef string
	AddedBy         id.UserID
	AddedAt         time.Time
}

// Grant is a run-time admin or an allowed server, with who added it.
type Grant struct {
	Subject string
	AddedBy id.UserID
	AddedAt time.Time
}

// AddAdmin records an admin; it reports false if the user already was one.
func (q *RoleQuery) AddAdmin(ctx context.Context, userID, by id.UserID) (bool, error) {
	return q.insert(ctx, `INSERT INTO admins (user_id, added_by, added_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO NOTHING`,
		userID, by)
}

// RemoveAdmin removes a run-time admin; it reports false if the user was not one.
func (q *RoleQuery) RemoveAdmin(ctx context.Context, userID id.UserID) (bool, error) {
	return q.delete(ctx, `DELETE FROM admins WHERE user_id = $1`, userID)
}

// IsAdmin reports whether the user was added as an admin at run time.
func (q *RoleQuery) IsAdmin(ctx context.Context, userID id.UserID) (bool, error) {
	return q.exists(ctx, `SELECT 1 FROM admins WHERE user_id = $1`, userID)
}

// Admins lists the run-time admins.
func (q *RoleQuery) Admins(ctx context.Context) ([]Grant, error) {
	return q.grants(ctx, `SELECT user_id, added_by, added_at FROM admins ORDER BY user_id`)
}

// AddClinician registers a clinician; it reports false if the user already was one (the reference is then updated).
func (q *RoleQuery) AddClinician(ctx context.Context, userID id.UserID, practitionerRef string, by id.UserID) (bool, error) {
	existed, err := q.IsClinician(ctx, userID)
	if err != nil {
		return false, err
	}
	if existed {
		_, err = q.db.Exec(ctx, `UPDATE clinicians SET practitioner_ref = $2 WHERE user_id = $1`, userID, nullString(practitionerRef))
		return false, err
	}
	_, err = q.db.Exec(ctx, `INSERT INTO clinicians (user_id, practitioner_ref, added_by, added_at) VALUES ($1, $2, $3, $4)`,
		userID, nullString(practitionerRef), by, time.Now().UnixMilli())
	return err == nil, err
}

// RemoveClinician removes a clinician; it reports false if the user was not one.
func (q *RoleQuery) RemoveClinician(ctx context.Context, userID id.UserID) (bool, error) {
	return q.delete(ctx, `DELETE FROM clinicians WHERE user_id = $1`, userID)
}

// IsClinician reports whether the user is a registered clinician.
func (q *RoleQuery) IsClinician(ctx context.Context, userID id.UserID) (bool, error) {
	return q.exists(ctx, `SELECT 1 FROM clinicians WHERE user_id = $1`, userID)
}

// Clinicians lists the registered clinicians.
func (q *RoleQuery) Clinicians(ctx context.Context) ([]*Clinician, error) {
	rows, err := q.db.Query(ctx, `SELECT user_id, COALESCE(practitioner_ref, ''), added_by, added_at FROM clinicians ORDER BY user_id`)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*Clinician, error) {
		var c Clinician
		var at int64
		err := row.Scan(&c.UserID, &c.PractitionerRef, &c.AddedBy, &at)
		c.AddedAt = time.UnixMilli(at)
		return &c, err
	}, err).AsList()
}

// AllowServer adds a homeserver to the allow-list; it reports false if it was there already.
func (q *RoleQuery) AllowServer(ctx context.Context, server string, by id.UserID) (bool, error) {
	return q.insert(ctx, `INSERT INTO allowed_servers (server, added_by, added_at) VALUES ($1, $2, $3) ON CONFLICT (server) DO NOTHING`,
		server, by)
}

// DenyServer removes a homeserver added by an admin; it reports false if it was not there.
func (q *RoleQuery) DenyServer(ctx context.Context, server string) (bool, error) {
	return q.delete(ctx, `DELETE FROM allowed_servers WHERE server = $1`, server)
}

// IsServerAllowed reports whether an admin allowed the server.
func (q *RoleQuery) IsServerAllowed(ctx context.Context, server string) (bool, error) {
	return q.exists(ctx, `SELECT 1 FROM allowed_servers WHERE server = $1`, server)
}

// AllowedServers lists the servers added by admins.
func (q *RoleQuery) AllowedServers(ctx context.Context) ([]Grant, error) {
	return q.grants(ctx, `SELECT server, added_by, added_at FROM allowed_servers ORDER BY server`)
}

func (q *RoleQuery) insert(ctx context.Context, query string, subject any, by id.UserID) (bool, error) {
	res, err := q.db.Exec(ctx, query, subject, by, time.Now().UnixMilli())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (q *RoleQuery) delete(ctx context.Context, query string, subject any) (bool, error) {
	res, err := q.db.Exec(ctx, query, subject)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (q *RoleQuery) exists(ctx context.Context, query string, args ...any) (bool, error) {
	var one int
	err := q.db.QueryRow(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("failed to query roles: %w", err)
	}
	return true, nil
}

func (q *RoleQuery) grants(ctx context.Context, query string) ([]Grant, error) {
	rows, err := q.db.Query(ctx, query)
	return dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (Grant, error) {
		var g Grant
		var at int64
		err := row.Scan(&g.Subject, &g.AddedBy, &at)
		g.AddedAt = time.UnixMilli(at)
		return g, err
	}, err).AsList()
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// PractitionerRef returns a clinician's FHIR Practitioner reference ("" when none or not a clinician).
func (q *RoleQuery) PractitionerRef(ctx context.Context, userID id.UserID) (string, error) {
	var ref string
	err := q.db.QueryRow(ctx, `SELECT COALESCE(practitioner_ref, '') FROM clinicians WHERE user_id = $1`, userID).Scan(&ref)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return ref, err
}
