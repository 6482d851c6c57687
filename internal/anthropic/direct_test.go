package anthropic

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

func TestComplete(t *testing.T) {
	tests := []struct {
		name       string
		response   anthropictest.Response
		wantText   string
		wantStatus int
		wantType   string
	}{
		{name: "answer", response: anthropictest.Response{Text: "A Short Title"}, wantText: "A Short Title"},
		{name: "thinking is not text", response: anthropictest.Response{Blocks: []anthropictest.Block{
			{Type: anthropictest.BlockThinking, Thinking: "hmm"}, {Type: anthropictest.BlockText, Text: "Title"}}}, wantText: "Title"},
		{name: "bad key", response: anthropictest.Response{Error: &anthropictest.ErrorResponse{Status: 401, Message: "invalid x-api-key"}},
			wantStatus: 401, wantType: "authentication_error"},
		{name: "overloaded", response: anthropictest.Response{Error: &anthropictest.ErrorResponse{Status: 529}},
			wantStatus: 529, wantType: "overloaded_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mock := anthropictest.NewServer(t, anthropictest.Script{Default: &tt.response})
			c := &Client{BaseURL: mock.URL()}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.Complete(ctx, "sk-ant-test", Request{Model: "claude-haiku-4-5", System: "Be brief.",
				Messages: []Message{{Role: "user", Content: "Name this chat."}}, MaxTokens: 64})
			if tt.wantStatus != 0 {
				var ae *APIError
				require.ErrorAs(t, err, &ae)
				assert.Equal(t, tt.wantStatus, ae.Status)
				assert.Equal(t, tt.wantType, ae.Type)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantText, resp.Text)
			assert.Positive(t, resp.OutputTokens)
			reqs := mock.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, "sk-ant-test", reqs[0].Header.Get("X-Api-Key"))
			assert.Equal(t, "2023-06-01", reqs[0].Header.Get("Anthropic-Version"))
			assert.Contains(t, reqs[0].AllText(), `"model": "claude-haiku-4-5"`)
			assert.Contains(t, reqs[0].AllText(), `"system": "Be brief."`)
		})
	}
}
