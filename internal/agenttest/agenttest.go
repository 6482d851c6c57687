// Package agenttest helps tests that feed agent event streams to the
// gateway's readers: an agent stream's bytes, and a stream that breaks off
// as a cut connection does.
package agenttest

import (
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// SSE is events as an agent server streams them: one "data:" line of JSON
// per event.
func SSE(events ...agent.Event) string {
	var b strings.Builder
	for _, e := range events {
		data, err := json.Marshal(e)
		if err != nil {
			panic(err) // agent.Event always encodes
		}
		b.WriteString("data: ")
		b.Write(data)
		b.WriteString("\n\n")
	}
	return b.String()
}

// BrokenAfter reads r, then fails with err where r would end: a stream
// cut off after what r holds.
func BrokenAfter(r io.Reader, err error) io.Reader {
	return &brokenReader{data: r, err: err}
}

type brokenReader struct {
	data io.Reader
	err  error
}

func (b *brokenReader) Read(p []byte) (int, error) {
	n, err := b.data.Read(p)
	if errors.Is(err, io.EOF) {
		return n, b.err
	}
	return n, err
}
