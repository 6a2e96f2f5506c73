package bot

import (
	"context"
	"errors"
	"net"
	"net/http"

	"maunium.net/go/mautrix"
)

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// permanent marks an error that retrying will not fix.
func permanent(err error) error { return permanentError{err} }

// Permanent marks an error from a handler that retrying will not fix, so the event is not retried.
func Permanent(err error) error { return permanent(err) }

func isPermanent(err error) bool {
	var p permanentError
	if errors.As(err, &p) {
		return true
	}
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		code := httpErr.Response.StatusCode
		return code >= 400 && code < 500 && code != http.StatusTooManyRequests && code != http.StatusRequestTimeout
	}
	return false
}

// IsTransient reports whether err is worth retrying without limit: the homeserver could not be reached, timed
// out, rate-limited or failed with a 5xx.
func IsTransient(err error) bool {
	if err == nil || isPermanent(err) {
		return false
	}
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) {
		if httpErr.Response == nil {
			return true // no answer at all
		}
		code := httpErr.Response.StatusCode
		return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded)
}

// errorCode is a short, PHI-free description of an error for storing with a failed attempt.
func errorCode(err error) string {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) {
		if httpErr.RespError != nil {
			return httpErr.RespError.ErrCode
		}
		if httpErr.Response != nil {
			return httpErr.Response.Status
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return "network error"
	}
	return "error"
}

// isInternalError reports whether err is the homeserver's 500 M_UNKNOWN, which is also how Synapse answers a /sync
// of an appservice user (it serves none).
func isInternalError(err error) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.IsStatus(http.StatusInternalServerError) &&
		httpErr.RespError != nil && httpErr.RespError.ErrCode == mautrix.MUnknown.ErrCode
}
