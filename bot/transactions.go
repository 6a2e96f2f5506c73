package bot

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/store"
)

// DefaultMaxBodyBytes limits a transaction request body when the config sets no limit.
const DefaultMaxBodyBytes = 10 << 20

// transaction is the part of an appservice transaction the bot stores. Events stay raw: they are parsed when
// processed, so nothing the homeserver sent is lost to a parsing mistake.
type transaction struct {
	Events []json.RawMessage `json:"events"`
}

// eventHeader is what the inbox needs to know of an event before storing it.
type eventHeader struct {
	ID       id.EventID `json:"event_id"`
	RoomID   id.RoomID  `json:"room_id"`
	Sender   id.UserID  `json:"sender"`
	Type     string     `json:"type"`
	OriginTS int64      `json:"origin_server_ts"`
	StateKey *string    `json:"state_key"`
}

func (b *Bot) listen() error {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/app/v1/transactions/{txnID}", b.putTransaction)
	if b.Config.Metrics.Listen == b.Config.Appservice.Listen {
		mux.Handle("GET /metrics", b.Metrics.handler()) // configured to share this listener
	}
	mux.HandleFunc("GET /_matrix/mau/ready", b.ready)
	for _, r := range b.routes {
		mux.Handle(r.pattern, r.handler)
	}
	mux.Handle("/", b.AS.Router)
	listener, err := net.Listen("tcp", b.Config.Appservice.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", b.Config.Appservice.Listen, err)
	}
	b.listener = listener
	b.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := b.server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.Log.Error().Err(err).Msg("HTTP listener failed")
		}
	}()
	return b.listenMetrics()
}

// checkHSToken answers 401 when the homeserver sent no token and 403 when the token is wrong (compared in constant
// time), as the application service API requires.
func (b *Bot) checkHSToken(w http.ResponseWriter, r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		token = r.URL.Query().Get("access_token") // older homeservers send the token as a query parameter
	}
	if token == "" {
		mautrix.RespError{ErrCode: "M_UNAUTHORIZED", StatusCode: http.StatusUnauthorized, Err: "Missing homeserver token"}.Write(w)
		return false
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(b.AS.Registration.ServerToken)) != 1 {
		mautrix.MForbidden.WithMessage("Invalid homeserver token").Write(w)
		return false
	}
	return true
}

// putTransaction stores every event of a transaction in the inbox and only then acknowledges it. A replayed
// transaction, or the same events under a new transaction ID, store nothing new.
func (b *Bot) putTransaction(w http.ResponseWriter, r *http.Request) {
	if !b.checkHSToken(w, r) {
		return
	}
	txnID := r.PathValue("txnID")
	log := b.Log.With().Str("transaction_id", txnID).Logger()
	limit := b.Config.Appservice.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		log.Warn().Int64("limit", limit).Msg("Rejected oversized transaction")
		mautrix.MTooLarge.WithMessage("Transaction body is larger than %d bytes", limit).Write(w)
		return
	} else if err != nil {
		mautrix.MUnknown.WithMessage("Failed to read transaction body").Write(w)
		return
	}
	events, total, skipped, err := decodeTransaction(body, b.BotID(), time.Now())
	if err != nil {
		log.Warn().Err(err).Msg("Rejected malformed transaction")
		if json.Valid(body) {
			mautrix.MBadJSON.WithMessage("Transaction body is not a transaction: %v", err).Write(w)
		} else {
			mautrix.MNotJSON.WithMessage("Transaction body is not valid JSON: %v", err).Write(w)
		}
		return
	}
	for _, i := range skipped {
		log.Warn().Int("index", i).Msg("Skipped transaction entry that is not a room event")
	}
	rooms, err := b.Store.Inbox.Add(r.Context(), events)
	if err != nil {
		// Not acknowledged: the homeserver will send the transaction again.
		log.Err(err).Msg("Failed to store transaction")
		mautrix.MUnknown.WithMessage("Failed to store transaction").Write(w)
		return
	}
	if pushed := decodePushedCrypto(body); pushed != nil && !b.takePushed(r.Context(), pushed) {
		// Not acknowledged: room keys must not be lost while the bot's device is still starting. The stored events
		// are deduplicated when the homeserver sends the transaction again.
		mautrix.MUnknown.WithMessage("End-to-end encryption is still starting").WithStatus(http.StatusServiceUnavailable).Write(w)
		return
	}
	exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
	b.Metrics.EventsReceived.Add(float64(len(events)))
	log.Debug().Int("events", total).Int("stored", len(events)).Msg("Stored transaction")
	for _, roomID := range rooms {
		b.proc.wake(roomID)
	}
}

// decodeTransaction reads a transaction body and picks the events to store (see inboxEvents), received now. It
// fails only when the body is not a JSON transaction; it returns how many entries the transaction held and the
// indexes of the entries it skipped because they are not room events.
func decodeTransaction(body []byte, botID id.UserID, now time.Time) (events []*store.InboxEvent, total int, skipped []int, err error) {
	var txn transaction
	if err = json.Unmarshal(body, &txn); err != nil {
		return nil, 0, nil, err
	}
	events, skipped = inboxEvents(txn.Events, botID, now)
	return events, len(txn.Events), skipped, nil
}

// inboxEvents picks the events the bot must process: everything in a room except the bot's own messages (its own
// state events are kept: they tell it which rooms it is in). Events keep the order in which the homeserver delivered
// them, which the inbox keeps as their arrival order. They are never sorted by origin_server_ts: the sender's server
// sets it, and over federation it is whatever that server says, so sorting by it would let a sender put its event
// before others. An entry that is not a room event is skipped (and its index returned for the log): rejecting the
// whole transaction would make the homeserver resend it forever.
func inboxEvents(raw []json.RawMessage, botID id.UserID, now time.Time) (events []*store.InboxEvent, skipped []int) {
	events = make([]*store.InboxEvent, 0, len(raw))
	for i, data := range raw {
		var hdr eventHeader
		if err := json.Unmarshal(data, &hdr); err != nil || hdr.ID == "" || hdr.RoomID == "" || hdr.Sender == "" || hdr.Type == "" {
			skipped = append(skipped, i)
			continue
		}
		if hdr.Sender == botID && hdr.StateKey == nil {
			continue
		}
		events = append(events, &store.InboxEvent{
			EventID: hdr.ID, RoomID: hdr.RoomID, Sender: hdr.Sender, Type: hdr.Type,
			OriginTS: hdr.OriginTS, Raw: data, ReceivedAt: now,
		})
	}
	return events, skipped
}
