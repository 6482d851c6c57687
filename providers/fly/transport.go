package fly

import (
	"net/http"
	"net/url"
	"strings"
)

// apiTransport is the flaps client's innermost round tripper. It sends
// every request to base (flaps itself only reads FLY_FLAPS_BASE_URL, a
// process-wide setting: api_url must work per provider) through next, a
// [providers.RetryTransport]: Fly limits each action on a Machine to about
// 1 request per second (burst 3) and GETs to 5 per second, and a 429 is
// waited out, never surfaced.
type apiTransport struct {
	base *url.URL
	next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = t.base.Scheme, t.base.Host
	u.Path = strings.TrimRight(t.base.Path, "/") + req.URL.Path
	u.RawPath = ""
	out.URL, out.Host = &u, ""
	return t.next.RoundTrip(out)
}
