package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// floorLocalpart is the user of the floor appservice. It must not match caseroom's namespace (caseroom, caseroom_*)
// nor the bench's users (bench_*).
const floorLocalpart = "benchfloor"

// floorService is F1: an appservice that does nothing but answer commands. It acknowledges each transaction at
// once and then answers every message that starts with "!" with an m.notice reply through the client API, one
// goroutine per message: the same shape of work the homeserver does for caseroom, without caseroom's work.
// It also joins rooms it is invited to, and records one real message event as the template for ingest.
type floorService struct {
	reg      *appservice.Registration
	botID    id.UserID
	client   *mautrix.Client
	listener net.Listener
	server   *http.Server

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // replies and joins in flight

	mu          sync.Mutex
	recorded    json.RawMessage // first message a user sent into a floor room, as the homeserver delivered it
	replyErrors atomic.Int64
}

// startFloor starts the floor appservice's listener on a free loopback port. Its registration is fr.reg.
func startFloor(hsURL, domain string) (*floorService, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the floor appservice: %w", err)
	}
	rateLimited := false
	reg := &appservice.Registration{
		ID:              "caseroom-bench-floor",
		URL:             "http://" + listener.Addr().String(),
		AppToken:        random.String(64),
		ServerToken:     random.String(64),
		SenderLocalpart: floorLocalpart,
		RateLimited:     &rateLimited,
		Namespaces: appservice.Namespaces{UserIDs: appservice.NamespaceList{
			{Regex: "^@" + regexp.QuoteMeta(floorLocalpart+":"+domain) + "$", Exclusive: true},
		}},
	}
	botID := id.NewUserID(floorLocalpart, domain)
	client, err := mautrix.NewClient(hsURL, botID, reg.AppToken)
	if err != nil {
		_ = listener.Close()
		return nil, err
	}
	client.Client = &http.Client{Timeout: 30 * time.Second, Transport: newTransport(64)}
	f := &floorService{reg: reg, botID: botID, client: client, listener: listener}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/app/v1/transactions/{txnID}", f.putTransaction)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mautrix.MNotFound.WithMessage("The floor appservice only takes transactions").Write(w)
	})
	f.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.server.Serve(listener) }()
	return f, nil
}

// stop closes the listener and waits for the replies in flight.
func (f *floorService) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = f.server.Shutdown(ctx)
	f.cancel()
	f.wg.Wait()
	f.client.Client.CloseIdleConnections()
}

// floorEvent is what the floor appservice reads of an event.
type floorEvent struct {
	ID       id.EventID `json:"event_id"`
	RoomID   id.RoomID  `json:"room_id"`
	Sender   id.UserID  `json:"sender"`
	Type     string     `json:"type"`
	StateKey *string    `json:"state_key"`
	Content  struct {
		MsgType    string `json:"msgtype"`
		Body       string `json:"body"`
		Membership string `json:"membership"`
	} `json:"content"`
}

func (f *floorService) putTransaction(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(token), []byte(f.reg.ServerToken)) != 1 {
		mautrix.MForbidden.WithMessage("Invalid homeserver token").Write(w)
		return
	}
	var txn struct {
		Events []json.RawMessage `json:"events"`
	}
	body, err := io.ReadAll(r.Body)
	if err == nil {
		err = json.Unmarshal(body, &txn)
	}
	if err != nil {
		mautrix.MNotJSON.WithMessage("Transaction body is not valid JSON").Write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))

	for _, raw := range txn.Events {
		var evt floorEvent
		if json.Unmarshal(raw, &evt) != nil {
			continue
		}
		switch {
		case evt.Type == event.StateMember.Type && evt.StateKey != nil && *evt.StateKey == f.botID.String() &&
			evt.Content.Membership == string(event.MembershipInvite):
			f.async(func(ctx context.Context) error {
				_, err := f.client.JoinRoomByID(ctx, evt.RoomID)
				return err
			})
		case evt.Type == event.EventMessage.Type && evt.Sender != f.botID && strings.HasPrefix(evt.Content.Body, "!"):
			f.record(raw)
			f.async(func(ctx context.Context) error {
				_, err := f.client.SendMessageEvent(ctx, evt.RoomID, event.EventMessage, &event.MessageEventContent{
					MsgType:   event.MsgNotice,
					Body:      "Pong! (floor appservice)",
					Mentions:  &event.Mentions{},
					RelatesTo: &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: evt.ID}},
				})
				return err
			})
		}
	}
}

// async runs a client API call in its own goroutine, as a do-nothing appservice with concurrent handlers would.
func (f *floorService) async(call func(ctx context.Context) error) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := call(f.ctx); err != nil && !errors.Is(err, context.Canceled) {
			f.replyErrors.Add(1)
		}
	}()
}

func (f *floorService) record(raw json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.recorded == nil {
		f.recorded = append(json.RawMessage(nil), raw...)
	}
}

// recordedMessage is the first user message the homeserver delivered to the floor appservice, or nil.
func (f *floorService) recordedMessage() json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recorded
}
