package ehr

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"

	"github.com/caseroom/caseroom/store"
)

// SubscriptionPath is the bot's endpoint for FHIR rest-hook Subscription notifications. Register a Subscription
// with channel type rest-hook, endpoint <appservice.address>/caseroom/fhir/subscription and header
// "Authorization: Bearer <ehr.subscription_secret>", for Observations and DiagnosticReports.
const SubscriptionPath = "/caseroom/fhir/subscription"

// MaxNotificationBytes bounds the body of one notification.
const MaxNotificationBytes = 1 << 20

// maxNotifiedResources bounds how many resources one notification may name.
const maxNotifiedResources = 100

// Subscription receives FHIR R4 rest-hook notifications: POST SubscriptionPath with an empty body (a ping: poll
// now), with an Observation or a DiagnosticReport, or with a Bundle of them (history or subscription-notification
// Bundles: entries with the resource, or only its fullUrl); and PUT SubscriptionPath/<type>/<id> (an R4 rest-hook
// with a payload). A notified resource is read back from the EHR and posted through Poller.Deliver, the same path
// as polling, so the room sees each result once whichever path finds it first. Requests must carry the shared
// secret as a bearer token (401 without it, 403 when wrong); malformed bodies get 400, oversized ones 413, always
// with a Matrix error body.
type Subscription struct {
	Poller *Poller
	// Secret is the bearer token the EHR sends (ehr.subscription_secret); an empty Secret refuses every request.
	Secret string
	Log    zerolog.Logger
	// Timeout bounds the reads of one notification (default 30 s).
	Timeout time.Duration
}

var _ http.Handler = (*Subscription)(nil)

// ServeHTTP handles one notification.
func (s *Subscription) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxNotificationBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		mautrix.MTooLarge.WithMessage("Notification body is larger than %d bytes", MaxNotificationBytes).Write(w)
		return
	} else if err != nil {
		mautrix.MUnknown.WithMessage("Failed to read the notification body").Write(w)
		return
	}
	refs, err := notifiedResources(body)
	if err != nil {
		if json.Valid(body) {
			mautrix.MBadJSON.WithMessage("Not a FHIR notification: %v", err).Write(w)
		} else {
			mautrix.MNotJSON.WithMessage("Notification body is not valid JSON").Write(w)
		}
		return
	}
	if typ := r.PathValue("type"); typ != "" {
		id := r.PathValue("id")
		if !validID(typ) || !validID(id) {
			mautrix.MInvalidParam.WithMessage("Invalid resource type or id in the path").Write(w)
			return
		}
		refs = []resourceRef{{typ, id}}
	}
	refs = slices.DeleteFunc(refs, func(ref resourceRef) bool { return !slices.Contains(ResultTypes, ref.typ) })
	if len(refs) > maxNotifiedResources {
		mautrix.MTooLarge.WithMessage("A notification may name at most %d resources", maxNotifiedResources).Write(w)
		return
	}
	log := s.Log.With().Str("component", "fhir-subscription").Logger()
	if len(refs) == 0 {
		// A ping, a notification without the resource, or about something else: polling finds what is new.
		log.Debug().Msg("Subscription notification without results; polling now")
		s.Poller.Kick()
		exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
		return
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), timeout)
	defer cancel()
	posted := 0
	for _, ref := range refs {
		n, err := s.Poller.DeliverRef(ctx, ref.typ, ref.id, store.EHRSourceSubscription)
		if err != nil {
			// Polling reads it later; the EHR need not send it again.
			log.Warn().Err(err).Str("resource", ref.typ+"/"+ref.id).Msg("Failed to handle a notified resource; polling now")
			s.Poller.Kick()
			exhttp.WriteEmptyJSONResponse(w, http.StatusAccepted)
			return
		}
		posted += n
	}
	log.Debug().Int("resources", len(refs)).Int("posted", posted).Msg("Handled a subscription notification")
	exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
}

// authorized checks the bearer token in constant time: 401 when there is none, 403 when it is wrong.
func (s *Subscription) authorized(w http.ResponseWriter, r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		mautrix.MMissingToken.WithMessage("Missing bearer token").Write(w)
		return false
	}
	if s.Secret == "" || subtle.ConstantTimeCompare([]byte(token), []byte(s.Secret)) != 1 {
		mautrix.MForbidden.WithMessage("Invalid bearer token").Write(w)
		return false
	}
	return true
}

// resourceRef is a resource named by a notification.
type resourceRef struct{ typ, id string }

// notification is the part of a notification body caseroom reads: a resource, or a Bundle of them; a
// SubscriptionStatus (R4B, and the first entry of subscription-notification Bundles) names them as focus.
type notification struct {
	ResourceType      string        `json:"resourceType"`
	ID                string        `json:"id"`
	Entry             []BundleEntry `json:"entry"`
	NotificationEvent []struct {
		Focus *Reference `json:"focus"`
	} `json:"notificationEvent"`
}

// notifiedResources lists the resources a notification body names; an empty body names none.
func notifiedResources(body []byte) ([]resourceRef, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var n notification
	if err := json.Unmarshal(body, &n); err != nil {
		return nil, errors.New("not a FHIR resource")
	}
	if n.ResourceType == "" {
		return nil, errors.New("no resourceType")
	}
	var refs []resourceRef
	add := func(typ, id string) {
		ref := resourceRef{typ, id}
		if validID(typ) && validID(id) && !slices.Contains(refs, ref) {
			refs = append(refs, ref)
		}
	}
	addReference := func(reference string) {
		if typ, id, ok := ParseReference(reference); ok {
			add(typ, id)
		}
	}
	switch n.ResourceType {
	case "Bundle":
		for _, e := range n.Entry {
			if len(e.Resource) > 0 {
				inner, err := notifiedResources(e.Resource)
				if err != nil {
					return nil, err
				}
				for _, ref := range inner {
					add(ref.typ, ref.id)
				}
				continue
			}
			addReference(e.FullURL)
			if e.Request != nil {
				addReference(e.Request.URL)
			}
		}
	case "SubscriptionStatus":
		for _, ev := range n.NotificationEvent {
			if ev.Focus != nil {
				addReference(ev.Focus.Reference)
			}
		}
	default:
		add(n.ResourceType, n.ID)
	}
	return refs, nil
}
