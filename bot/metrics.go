package bot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/caseroom/caseroom/store"
)

// Metrics are the bot's Prometheus metrics, served at /metrics on their own listener (metrics.listen). They count and time;
// they never carry patient data (labels are command names and outcome words).
type Metrics struct {
	Registry *prometheus.Registry

	EventsReceived  prometheus.Counter
	EventsProcessed *prometheus.CounterVec // by event type class and outcome
	Commands        *prometheus.CounterVec // by command and outcome
	ReplyLatency    prometheus.Histogram   // from the event's timestamp to the reply being sent
	MessagesSent    *prometheus.CounterVec // by outcome (sent, retry, failed)
	EHRRequests     *prometheus.CounterVec // by outcome (delivered, retry, dead)
	RemindersSent   prometheus.Counter
}

// newMetrics registers the metrics, including gauges read from the database at scrape time (from partial indexes
// of open work only, so a scrape costs the same however large the tables grow).
func newMetrics(st *store.Store) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		EventsReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "caseroom_events_received_total", Help: "Events received from the homeserver and stored in the inbox."}),
		EventsProcessed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caseroom_events_processed_total", Help: "Inbox events processed, by outcome."}, []string{"outcome"}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caseroom_commands_total", Help: "Commands run, by command and outcome."}, []string{"command", "outcome"}),
		ReplyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "caseroom_reply_latency_seconds", Help: "From a command's timestamp to its reply being accepted by the homeserver.",
			Buckets: []float64{.005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30}}),
		MessagesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caseroom_messages_sent_total", Help: "Messages sent to the homeserver, by outcome."}, []string{"outcome"}),
		EHRRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caseroom_ehr_deliveries_total", Help: "EHR outbox delivery attempts, by outcome."}, []string{"outcome"}),
		RemindersSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "caseroom_reminders_sent_total", Help: "Check-in reminders sent to patients."}),
	}
	reg.MustRegister(m.EventsReceived, m.EventsProcessed, m.Commands, m.ReplyLatency, m.MessagesSent, m.EHRRequests, m.RemindersSent,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&dbCollector{st: st})
	return m
}

// dbCollector reads the inbox and outbox gauges from the database when scraped.
type dbCollector struct {
	st *store.Store
}

var (
	inboxBacklogDesc  = prometheus.NewDesc("caseroom_inbox_backlog", "Events stored but not yet processed.", nil, nil)
	inboxOldestDesc   = prometheus.NewDesc("caseroom_inbox_oldest_age_seconds", "Age of the oldest unprocessed event.", nil, nil)
	outboxPendingDesc = prometheus.NewDesc("caseroom_ehr_outbox_pending", "Records waiting for delivery to the EHR.", nil, nil)
	outboxDeadDesc    = prometheus.NewDesc("caseroom_ehr_outbox_dead_letters", "Records the EHR refused.", nil, nil)
	outboxOldestDesc  = prometheus.NewDesc("caseroom_ehr_outbox_oldest_age_seconds", "Age of the oldest record waiting for the EHR.", nil, nil)
	dbUpDesc          = prometheus.NewDesc("caseroom_database_up", "1 when the database answers.", nil, nil)
)

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{inboxBacklogDesc, inboxOldestDesc, outboxPendingDesc, outboxDeadDesc, outboxOldestDesc, dbUpDesc} {
		ch <- d
	}
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	up := 1.0
	if err := c.st.Ping(ctx); err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(dbUpDesc, prometheus.GaugeValue, up)
	if count, oldest, err := c.st.Inbox.Backlog(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(inboxBacklogDesc, prometheus.GaugeValue, float64(count))
		ch <- prometheus.MustNewConstMetric(inboxOldestDesc, prometheus.GaugeValue, ageSeconds(oldest))
	}
	if stats, err := c.st.EHR.OpenStats(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(outboxPendingDesc, prometheus.GaugeValue, float64(stats.Pending))
		ch <- prometheus.MustNewConstMetric(outboxDeadDesc, prometheus.GaugeValue, float64(stats.Dead))
		ch <- prometheus.MustNewConstMetric(outboxOldestDesc, prometheus.GaugeValue, ageSeconds(stats.OldestPending))
	}
}

func ageSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return time.Since(t).Seconds()
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// listenMetrics serves /metrics on metrics.listen. The appservice listener has to be reachable by the homeserver;
// metrics (which say how busy the bot is and how its EHR delivery goes) belong on loopback or a monitoring network.
// When metrics.listen is appservice.listen, listen serves them there instead; when it is empty, nowhere.
func (b *Bot) listenMetrics() error {
	addr := b.Config.Metrics.Listen
	if addr == "" || addr == b.Config.Appservice.Listen {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", b.Metrics.handler())
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s (metrics.listen): %w", addr, err)
	}
	b.metricsServer = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := b.metricsServer.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.Log.Error().Err(err).Msg("Metrics listener failed")
		}
	}()
	b.Log.Info().Str("listen", listener.Addr().String()).Msg("Serving metrics")
	return nil
}

// metricOutcome keeps outcome labels few: "refused:role" and the like count as their first word.
func metricOutcome(outcome string) string {
	if i := strings.IndexByte(outcome, ':'); i > 0 {
		return outcome[:i]
	}
	return outcome
}

// ready answers /_matrix/mau/ready: 200 only when the bot has started and its database and homeserver answer
// (the homeserver check is cached for a few seconds).
func (b *Bot) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	problem := ""
	switch {
	case !b.AS.Ready:
		problem = "starting"
	case b.Store.Ping(ctx) != nil:
		problem = "database not reachable"
	case !b.homeserverUp(ctx):
		problem = "homeserver not reachable"
	}
	w.Header().Set("Content-Type", "application/json")
	if problem != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, `{"ready":false,"problem":%q}`, problem)
		return
	}
	_, _ = w.Write([]byte(`{"ready":true}`))
}

func (b *Bot) homeserverUp(ctx context.Context) bool {
	b.hsMu.Lock()
	defer b.hsMu.Unlock()
	if time.Since(b.hsCheckedAt) < 5*time.Second {
		return b.hsUp
	}
	_, err := b.AS.BotIntent().Versions(ctx)
	b.hsUp, b.hsCheckedAt = err == nil, time.Now()
	return b.hsUp
}
