package anthropic

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
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

func TestCompleteWithImages(t *testing.T) {
	png := agent.Image{MediaType: "image/png", Data: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}
	gif := agent.Image{MediaType: "image/gif", Data: "R0lGODlhAQABAAAAACw="}
	tests := []struct {
		name string
		msgs []Message
		want string // the request's messages
	}{
		{name: "text only stays a string", msgs: []Message{{Role: "user", Content: "Name this chat."}},
			want: `[{"role":"user","content":"Name this chat."}]`},
		{name: "images before the text", msgs: []Message{{Role: "user", Content: "Name this chat.", Images: []agent.Image{png, gif}}},
			want: `[{"role":"user","content":[
				{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + png.Data + `"}},
				{"type":"image","source":{"type":"base64","media_type":"image/gif","data":"` + gif.Data + `"}},
				{"type":"text","text":"Name this chat."}]}]`},
		{name: "image without text", msgs: []Message{{Role: "user", Content: "What is it?"}, {Role: "assistant", Content: "Show me."},
			{Role: "user", Images: []agent.Image{gif}}},
			want: `[{"role":"user","content":"What is it?"},{"role":"assistant","content":"Show me."},
				{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/gif","data":"` + gif.Data + `"}}]}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mock := anthropictest.NewServer(t, anthropictest.Script{Default: &anthropictest.Response{Text: "A Cat"}})
			c := &Client{BaseURL: mock.URL()}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.Complete(ctx, "sk-ant-test", Request{Model: "claude-haiku-4-5", Messages: tt.msgs, MaxTokens: 64})
			require.NoError(t, err)
			assert.Equal(t, "A Cat", resp.Text)
			reqs := mock.Requests()
			require.Len(t, reqs, 1)
			var body struct {
				Messages json.RawMessage `json:"messages"`
			}
			require.NoError(t, json.Unmarshal(reqs[0].Body, &body))
			assert.JSONEq(t, tt.want, string(body.Messages))
		})
	}
}
