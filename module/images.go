package module

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/agcluster/caddy-agcluster/agent"
	"github.com/agcluster/caddy-agcluster/openai"
)

// imageFetchTimeout bounds the fetch of one image URL.
const imageFetchTimeout = 20 * time.Second

// fetchAllowed tells whether an image URL may be fetched: https only, on
// a host of FetchImageHosts ("*.example.com" matches its subdomains).
func (h *Handler) fetchAllowed(u *url.URL) bool {
	if u.Scheme != "https" || u.User != nil {
		return false
	}
	host := strings.ToLower(u.Hostname())
	for _, allowed := range h.FetchImageHosts {
		allowed = strings.ToLower(allowed)
		if suffix, ok := strings.CutPrefix(allowed, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == allowed {
			return true
		}
	}
	return false
}

// parseOptions are the request parser's limits and image URL policy.
func (h *Handler) parseOptions() openai.ParseOptions {
	o := openai.ParseOptions{MaxBodyBytes: h.MaxRequestBody}
	if len(h.FetchImageHosts) > 0 {
		o.FetchImageURL = h.fetchAllowed
	}
	return o
}

// images returns a request's images for the agent, fetching those given
// by an allowed URL.
func (h *Handler) images(ctx context.Context, imgs []openai.Image) ([]agent.Image, *openai.Error) {
	out := make([]agent.Image, 0, len(imgs))
	for _, img := range imgs {
		if img.URL != "" {
			fetched, oerr := h.fetchImage(ctx, img)
			if oerr != nil {
				return nil, oerr
			}
			img = fetched
		}
		out = append(out, img.Agent())
	}
	return out, nil
}

// fetchImage downloads a URL image, within the image size limit. Redirects
// must stay on allowed hosts.
func (h *Handler) fetchImage(ctx context.Context, img openai.Image) (openai.Image, *openai.Error) {
	ctx, cancel := context.WithTimeout(ctx, imageFetchTimeout)
	defer cancel()
	client := &http.Client{CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if len(via) >= 5 || !h.fetchAllowed(r.URL) {
			return fmt.Errorf("redirect to %s is not allowed", r.URL.Redacted())
		}
		return nil
	}}
	fail := func(why string, err error) (openai.Image, *openai.Error) {
		h.logger.Info("image fetch failed", zap.String("url", img.URL), zap.Error(err))
		return openai.Image{}, openai.BadRequest(fmt.Sprintf("%s: the image at this URL could not be fetched (%s); send it as a data: URL", img.Param, why), img.Param)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, img.URL, nil)
	if err != nil {
		return fail("bad URL", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail("no answer", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail("HTTP "+resp.Status, nil)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, openai.DefaultMaxImageBytes+1))
	if err != nil {
		return fail("read failed", err)
	}
	out, oerr := openai.ImageData(img.Param, data, openai.DefaultMaxImageBytes)
	if oerr != nil {
		return openai.Image{}, oerr
	}
	return out, nil
}
