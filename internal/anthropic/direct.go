// Package anthropic makes one-shot, non-streaming calls to the Anthropic
// Messages API. The gateway answers chat UIs' background tasks (titles,
// tags, follow-up suggestions) this way, without a container, so they
// never become turns in a conversation's agent.
package anthropic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Client calls the Messages API.
type Client struct {
	// BaseURL is the API's base URL, e.g. "https://api.anthropic.com".
	BaseURL string
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
}

// Message is one message of a conversation.
type Message struct {
	// Role is "user" or "assistant".
	Role string `json:"role"`
	// Content is the message text.
	Content string `json:"content"`
	// Images go with a user message as image blocks before its text (the
	// order Anthropic's vision guide recommends).
	Images []agent.Image `json:"-"`
}

// MarshalJSON writes the message as the Messages API takes it: content
// as a string, or, with images, as an array of base64 image blocks and
// then a text block (left out when the text is empty).
func (m Message) MarshalJSON() ([]byte, error) {
	if len(m.Images) == 0 {
		type plain Message
		return json.Marshal(plain(m))
	}
	blocks := make([]contentBlock, 0, len(m.Images)+1)
	for _, img := range m.Images {
		blocks = append(blocks, contentBlock{Type: "image",
			Source: &imageSource{Type: "base64", MediaType: img.MediaType, Data: img.Data}})
	}
	if m.Content != "" {
		blocks = append(blocks, contentBlock{Type: "text", Text: m.Content})
	}
	return json.Marshal(struct {
		Role    string         `json:"role"`
		Content []contentBlock `json:"content"`
	}{m.Role, blocks})
}

// contentBlock is a text or image block of a request message.
type contentBlock struct {
	// Type is "text" or "image".
	Type string `json:"type"`
	// Text is a text block's text.
	Text string `json:"text,omitempty"`
	// Source is an image block's image.
	Source *imageSource `json:"source,omitempty"`
}

// imageSource is the source of an image block.
type imageSource struct {
	// Type is "base64".
	Type string `json:"type"`
	// MediaType is image/png, image/jpeg, image/gif or image/webp.
	MediaType string `json:"media_type"`
	// Data is the image, standard base64.
	Data string `json:"data"`
}

// Request is a one-shot completion request.
type Request struct {
	// Model is the model id.
	Model string `json:"model"`
	// System is the system prompt.
	System string `json:"system,omitempty"`
	// Messages alternate user and assistant, starting and ending with user.
	Messages []Message `json:"messages"`
	// MaxTokens caps the answer.
	MaxTokens int `json:"max_tokens"`
}

// Response is the part of the API's answer the gateway uses.
type Response struct {
	// Text is the answer's text blocks joined.
	Text string
	// StopReason is the API's stop reason.
	StopReason string
	// InputTokens and OutputTokens are the usage.
	InputTokens, OutputTokens int64
}

// APIError is a non-2xx answer from the API.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Type is the API's error type (e.g. "authentication_error").
	Type string
	// Message is the API's message.
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("anthropic: HTTP %d %s: %s", e.Status, e.Type, e.Message)
}

// Complete sends req with apiKey and returns the answer.
func (c *Client) Complete(ctx context.Context, apiKey string, req Request) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("anthropic: encode request: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.BaseURL, "/")+"/v1/messages", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("anthropic: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("X-Api-Key", apiKey)
	hreq.Header.Set("Anthropic-Version", "2023-06-01")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("anthropic: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("anthropic: read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		if e.Error.Message == "" {
			e.Error.Message = strings.TrimSpace(string(raw))
		}
		return nil, &APIError{Status: resp.StatusCode, Type: e.Error.Type, Message: e.Error.Message}
	}
	var m struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		StopReason string `json:"stop_reason"`
		Usage      struct {
			InputTokens  int64 `json:"input_tokens"`
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("anthropic: decode response: %w", err)
	}
	out := &Response{StopReason: m.StopReason, InputTokens: m.Usage.InputTokens, OutputTokens: m.Usage.OutputTokens}
	var sb strings.Builder
	for _, b := range m.Content {
		if b.Type == "text" {
			sb.WriteString(b.Text)
		}
	}
	out.Text = sb.String()
	return out, nil
}
