package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

// TestScrapeQueriesUseIndexes: a metrics scrape reads only small partial indexes (pending and dead work), never a
// whole table, however many events, messages and delivered records the database holds.
func TestScrapeQueriesUseIndexes(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		conn, err := st.DB.RawDB.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		explain := "EXPLAIN QUERY PLAN "
		if cfg.Type == "postgres" {
			// With sequential scans priced out, a plan that still has one has no index to use.
			if _, err = conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
				t.Fatal(err)
			}
			explain = "EXPLAIN "
		}
		for name, query := range store.ScrapeQueries {
			plan := queryPlan(t, conn, explain+query)
			var bad []string
			for _, line := range plan {
				switch {
				case strings.Contains(line, "Seq Scan"),
					strings.HasPrefix(strings.TrimSpace(line), "SCAN ") && !strings.Contains(line, "USING"):
					bad = append(bad, line)
				case strings.Contains(line, "USING") || strings.Contains(line, "Index"):
					if !mentionsPartialIndex(line) {
						bad = append(bad, line)
					}
				}
			}
			t.Logf("%s: %s", name, strings.Join(plan, " / "))
			if len(bad) > 0 {
				t.Errorf("%s scans a whole table or index:\n%s", name, strings.Join(plan, "\n"))
			}
		}
	})
}

// partialIndexes are the indexes that hold only open work (WHERE clauses in the migrations).
var partialIndexes = []string{"inbox_pending_idx", "ehr_outbox_pending_idx", "ehr_outbox_pending_created_idx", "ehr_outbox_dead_idx"}

func mentionsPartialIndex(line string) bool {
	for _, idx := range partialIndexes {
		if strings.Contains(line, idx) {
			return true
		}
	}
	return false
}

func queryPlan(t *testing.T, conn *sql.Conn, query string) []string {
	t.Helper()
	rows, err := conn.QueryContext(context.Background(), query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var plan []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err = rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, fmt.Sprint(vals[len(vals)-1])) // SQLite: the detail column; PostgreSQL: the one column
	}
	return plan
}
