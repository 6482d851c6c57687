package openai

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Error types, as OpenAI names them.
const (
	// TypeInvalidRequest: the request is malformed or names something unknown.
	TypeInvalidRequest = "invalid_request_error"
	// TypeAuthentication: the API key is missing or was refused.
	TypeAuthentication = "authentication_error"
	// TypeConflict: the conversation is busy with another turn.
	TypeConflict = "conflict_error"
	// TypeRateLimit: too many requests.
	TypeRateLimit = "rate_limit_error"
	// TypeAPI: the gateway, the agent or the upstream API failed.
	TypeAPI = "api_error"
)

// Error is an OpenAI-shaped error. It is written as {"error": {...}} with
// [Error.Write].
type Error struct {
	// Status is the HTTP status to answer with.
	Status int `json:"-"`
	// Message explains the error to a human.
	Message string `json:"message"`
	// Type classifies the error ("invalid_request_error", "api_error", ...).
	Type string `json:"type"`
	// Param names the request field at fault, or is null.
	Param *string `json:"param"`
	// Code is a machine-readable reason, or null.
	Code *string `json:"code"`
	// ShouldRetry, when set, is sent as the x-should-retry header, which
	// OpenAI SDKs honour over their status-based retry rules. It is false
	// wherever a retry would run an agent turn a second time.
	ShouldRetry *bool `json:"-"`
	// RequestID, when set, is sent as the X-Request-ID header; see
	// [Error.WithRequestID].
	RequestID string `json:"-"`
}

// WithRequestID names the request in the error, for a failure whose
// detail went to the log under that id: the message ends with
// "(request id <id>)" and the X-Request-ID header carries it. It returns e.
func (e *Error) WithRequestID(id string) *Error {
	e.Message = WithRequestID(e.Message, id)
	e.RequestID = id
	return e
}

// WithRequestID appends "(request id <id>)" to a message for the client
// (before its final period), so the detail logged under id can be found.
func WithRequestID(msg, id string) string {
	return strings.TrimSuffix(msg, ".") + " (request id " + id + ")."
}

// Error returns the status, type and message.
func (e *Error) Error() string {
	return strconv.Itoa(e.Status) + " " + e.Type + ": " + e.Message
}

// Write writes the error as {"error": {...}} with Content-Type
// application/json, its status (500 if unset) and, when set, the
// x-should-retry and X-Request-ID headers.
func (e *Error) Write(w http.ResponseWriter) {
	status := e.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if e.ShouldRetry != nil {
		w.Header().Set("X-Should-Retry", strconv.FormatBool(*e.ShouldRetry))
	}
	if e.RequestID != "" {
		w.Header().Set("X-Request-ID", e.RequestID)
	}
	writeJSON(w, status, struct {
		Error *Error `json:"error"`
	}{e})
}

func newError(status int, typ, msg, param, code string, retry *bool) *Error {
	e := &Error{Status: status, Message: msg, Type: typ, ShouldRetry: retry}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	return e
}

func boolPtr(b bool) *bool { return &b }

// BadRequest returns a 400 invalid_request_error; param names the field at
// fault ("" for none).
func BadRequest(msg, param string) *Error {
	return newError(http.StatusBadRequest, TypeInvalidRequest, msg, param, "", nil)
}

// Unauthorized returns a 401 authentication_error with code
// "invalid_api_key": the key was refused.
func Unauthorized(msg string) *Error {
	return newError(http.StatusUnauthorized, TypeAuthentication, msg, "", "invalid_api_key", boolPtr(false))
}

// MissingAPIKey returns a 401 authentication_error with code
// "missing_api_key": the request carried no key.
func MissingAPIKey() *Error {
	return newError(http.StatusUnauthorized, TypeAuthentication,
		"You didn't provide an API key. Send it in the Authorization header as 'Bearer <key>'.",
		"", "missing_api_key", boolPtr(false))
}

// ModelNotFound returns a 404 invalid_request_error with code
// "model_not_found" and param "model".
func ModelNotFound(model string) *Error {
	return newError(http.StatusNotFound, TypeInvalidRequest,
		"The model `"+model+"` does not exist or you do not have access to it.",
		"model", "model_not_found", nil)
}

// Busy returns a 409 conflict_error with code "conversation_busy" for a
// conversation that is already running a turn. x-should-retry is false: a
// retry would queue a duplicate agent turn.
func Busy(msg string) *Error {
	return newError(http.StatusConflict, TypeConflict, msg, "", "conversation_busy", boolPtr(false))
}

// TooLarge returns a 413 invalid_request_error with code
// "request_too_large" for a body over limit bytes.
func TooLarge(limit int64) *Error {
	return newError(http.StatusRequestEntityTooLarge, TypeInvalidRequest,
		"The request body is larger than the limit of "+strconv.FormatInt(limit, 10)+" bytes.",
		"", "request_too_large", boolPtr(false))
}

// TypeInsufficientQuota and CodeInsufficientQuota are OpenAI's own type
// and code for an account past its quota.
const (
	TypeInsufficientQuota = "insufficient_quota"
	CodeInsufficientQuota = "insufficient_quota"
)

// InsufficientQuota returns a 429 in OpenAI's shape for a quota reached:
// type and code "insufficient_quota", x-should-retry false (a retry
// before the quota resets fails the same way).
func InsufficientQuota(msg string) *Error {
	return newError(http.StatusTooManyRequests, TypeInsufficientQuota, msg, "", CodeInsufficientQuota, boolPtr(false))
}

// RateLimited returns a 429 rate_limit_error with code
// "rate_limit_exceeded". It leaves x-should-retry unset: use it before an
// agent turn ran, so the client's back-off and retry is harmless.
func RateLimited(msg string) *Error {
	return newError(http.StatusTooManyRequests, TypeRateLimit, msg, "", "rate_limit_exceeded", nil)
}

// Upstream returns a 502 api_error with code "upstream_error" and
// x-should-retry false.
func Upstream(msg string) *Error {
	return newError(http.StatusBadGateway, TypeAPI, msg, "", "upstream_error", boolPtr(false))
}

// Unavailable returns a 503 api_error with code "provider_unavailable"
// (no container could be had). It leaves x-should-retry unset: no agent
// turn ran, so a retry is harmless.
func Unavailable(msg string) *Error {
	return newError(http.StatusServiceUnavailable, TypeAPI, msg, "", "provider_unavailable", nil)
}

// Internal returns a 500 api_error with code "internal_error" and
// x-should-retry false, since the gateway cannot tell whether a turn ran.
func Internal(msg string) *Error {
	return newError(http.StatusInternalServerError, TypeAPI, msg, "", "internal_error", boolPtr(false))
}

// FromAgentError maps an agent error event to the response for a turn that
// failed before any output reached the client. Every mapping sets
// x-should-retry false, since the turn ran:
//
//	auth        401 authentication_error  invalid_api_key
//	rate_limit  429 rate_limit_error      rate_limit_exceeded
//	overloaded  503 api_error             overloaded
//	upstream    502 api_error             upstream_error
//	timeout     504 api_error             timeout
//	max_turns   500 api_error             max_turns
//	interrupted 500 api_error             interrupted
//	other       500 api_error             internal_error
func FromAgentError(e agent.Event) *Error {
	msg := e.Message
	if msg == "" {
		msg = "the agent turn failed"
		if e.Code != "" {
			msg += " (" + e.Code + ")"
		}
	}
	no := boolPtr(false)
	switch e.Code {
	case agent.CodeAuth:
		return newError(http.StatusUnauthorized, TypeAuthentication, msg, "", "invalid_api_key", no)
	case agent.CodeRateLimit:
		return newError(http.StatusTooManyRequests, TypeRateLimit, msg, "", "rate_limit_exceeded", no)
	case agent.CodeOverloaded:
		return newError(http.StatusServiceUnavailable, TypeAPI, msg, "", "overloaded", no)
	case agent.CodeUpstream:
		return newError(http.StatusBadGateway, TypeAPI, msg, "", "upstream_error", no)
	case agent.CodeTimeout:
		return newError(http.StatusGatewayTimeout, TypeAPI, msg, "", "timeout", no)
	case agent.CodeMaxTurns:
		return newError(http.StatusInternalServerError, TypeAPI, msg, "", "max_turns", no)
	case agent.CodeInterrupted:
		return newError(http.StatusInternalServerError, TypeAPI, msg, "", "interrupted", no)
	default:
		return newError(http.StatusInternalServerError, TypeAPI, msg, "", "internal_error", no)
	}
}
