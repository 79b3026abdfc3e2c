package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/hubsmith/hub/adapters"
	"github.com/hubsmith/hub/broker"
	"github.com/hubsmith/hub/devices"
	"github.com/hubsmith/hub/files"
	"github.com/hubsmith/hub/store"
)

// Errors of the adapter itself; the table below gives their statuses.
var (
	errBadRequest  = errors.New("bad request")
	errInvalidJSON = errors.New("invalid JSON")
	errTooLarge    = errors.New("request body too large")
	errNotFound    = errors.New("not found")
	errMethod      = errors.New("method not allowed")
	errNoRetained  = errors.New("no retained value")
	errReserved    = errors.New("topics starting with $ are the hub's own and cannot be published to")
)

// statusOf is the one table from errors to HTTP statuses; the first entry
// the error matches wins, anything else is 500.
var statusOf = []struct {
	err    error
	status int
}{
	{errBadRequest, http.StatusBadRequest},
	// The limits (limits.go): the hub full is 503, one address or user
	// over its share 429, both with Retry-After.
	{adapters.ErrServerBusy, http.StatusServiceUnavailable},
	{adapters.ErrAddressLimit, http.StatusTooManyRequests},
	{adapters.ErrUserLimit, http.StatusTooManyRequests},
	{adapters.ErrTopicTooLong, http.StatusBadRequest},
	{adapters.ErrSubscriptionLimit, http.StatusBadRequest},
	{errInvalidJSON, http.StatusBadRequest},
	{errReserved, http.StatusBadRequest},
	{broker.ErrInvalidTopic, http.StatusBadRequest},
	{broker.ErrWildcardTopic, http.StatusBadRequest},
	{broker.ErrInvalidFilter, http.StatusBadRequest},
	{devices.ErrInvalid, http.StatusBadRequest},
	{store.ErrInvalidDevice, http.StatusBadRequest},
	{store.ErrInvalidName, http.StatusBadRequest},
	{store.ErrInvalidRole, http.StatusBadRequest},
	{store.ErrInvalidPassword, http.StatusBadRequest},
	{store.ErrInvalidACL, http.StatusBadRequest},
	{adapters.ErrAuthRequired, http.StatusUnauthorized},
	{adapters.ErrTooManyAttempts, http.StatusTooManyRequests},
	{adapters.ErrTLSRequired, http.StatusForbidden},
	{adapters.ErrBadCredentials, http.StatusUnauthorized},
	{adapters.ErrForbidden, http.StatusForbidden},
	{devices.ErrUnknownDevice, http.StatusNotFound},
	{store.ErrNotFound, http.StatusNotFound},
	{errNotFound, http.StatusNotFound},
	{errNoRetained, http.StatusNotFound},
	{errMethod, http.StatusMethodNotAllowed},
	{store.ErrExists, http.StatusConflict},
	{errTooLarge, http.StatusRequestEntityTooLarge},
	{adapters.ErrDeviceOffline, http.StatusServiceUnavailable},
	{broker.ErrClosed, http.StatusServiceUnavailable},
	{context.DeadlineExceeded, http.StatusGatewayTimeout},
	{broker.ErrStorage, http.StatusInsufficientStorage},
	// The file store's: a quota is 507 as in WebDAV (Nextcloud), a bad
	// digest 400 as S3's BadDigest.
	{files.ErrInvalidName, http.StatusBadRequest},
	{files.ErrInvalidContentType, http.StatusBadRequest},
	{files.ErrChecksum, http.StatusBadRequest},
	{files.ErrIncomplete, http.StatusBadRequest},
	{files.ErrSlot, http.StatusBadRequest},
	{files.ErrNotFound, http.StatusNotFound},
	{files.ErrExpired, http.StatusGone},
	{files.ErrTooLarge, http.StatusRequestEntityTooLarge},
	{files.ErrQuota, http.StatusInsufficientStorage},
	{files.ErrClosed, http.StatusServiceUnavailable},
	{errStalled, http.StatusRequestTimeout},
}

// httpStatus maps err to its HTTP status by statusOf.
func httpStatus(err error) int {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge
	}
	if s, ok := refusalStatus(err); ok {
		return s
	}
	for _, s := range statusOf {
		if errors.Is(err, s.err) {
			return s.status
		}
	}
	return http.StatusInternalServerError
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error string `json:"error"`
}

// fail answers with err's status and {"error": message}; 401 carries the
// WWW-Authenticate challenges. Server-side failures are logged.
func (a *Adapter) fail(c *gin.Context, err error) {
	status := httpStatus(err)
	if status == http.StatusUnauthorized {
		c.Writer.Header().Add("WWW-Authenticate", `Bearer realm="hub"`)
		if !scripted(c.Request) {
			c.Writer.Header().Add("WWW-Authenticate", `Basic realm="hub", charset="UTF-8"`)
		}
	}
	if wait, ok := adapters.RetryAfter(err); ok {
		c.Writer.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	}
	msg := err.Error()
	if _, refused := refusalStatus(err); !refused && status >= 500 && status != http.StatusServiceUnavailable && status != http.StatusGatewayTimeout && !errors.Is(err, files.ErrQuota) {
		a.log.Error("rest: request failed", "method", c.Request.Method, "path", logPath(c), "status", status, "err", err)
	}
	if status == http.StatusRequestEntityTooLarge && !errors.Is(err, files.ErrTooLarge) {
		msg = fmt.Sprintf("%s: the limit is %d bytes", errTooLarge, a.cfg.MaxBody)
	}
	c.AbortWithStatusJSON(status, errorBody{Error: msg})
}

// scripted reports whether a request comes from a script in a browser
// page (the dashboard sends X-Requested-With, as XMLHttpRequest libraries
// do; EventSource and WebSocket clients put their token in the query). A
// Basic challenge would make the browser open its own password dialog
// over the page, so those get the Bearer one only.
func scripted(r *http.Request) bool {
	return r.Header.Get("X-Requested-With") != "" || r.URL.Query().Has("access_token")
}

// badRequest wraps a message as a 400 error.
func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// decodeJSON reads exactly one JSON value from body into v, refusing
// unknown fields and trailing data, with an error that says what is wrong
// and where.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return err
			}
		}
		return fmt.Errorf("%w: unexpected data after the JSON value", errInvalidJSON)
	}
	return nil
}

func jsonError(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: empty body", errInvalidJSON)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: body ends in the middle of a value", errInvalidJSON)
	case errors.As(err, &syn):
		return fmt.Errorf("%w: syntax error at byte %d: %s", errInvalidJSON, syn.Offset, syn.Error())
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "the body"
		} else {
			field = "field " + field
		}
		return fmt.Errorf("%w: %s: expected %s, got JSON %s", errInvalidJSON, field, typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("%w: %s", errInvalidJSON, strings.TrimPrefix(err.Error(), "json: "))
	}
	return fmt.Errorf("%w: %v", errInvalidJSON, err)
}
