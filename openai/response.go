package openai

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
)

// Object names of the response types.
const (
	// ObjectChunk is the object of a [ChatCompletionChunk].
	ObjectChunk = "chat.completion.chunk"
	// ObjectCompletion is the object of a [ChatCompletion].
	ObjectCompletion = "chat.completion"
	// ObjectList is the object of a [ModelList].
	ObjectList = "list"
	// ObjectModel is the object of a [Model].
	ObjectModel = "model"
)

// Finish reasons.
const (
	// FinishStop ends a turn that finished, or one that failed after the
	// stream began (the failure is reported in the content).
	FinishStop = "stop"
	// FinishLength ends a turn the model cut at its output token limit.
	FinishLength = "length"
	// FinishToolCalls ends an answer that calls the client's functions.
	FinishToolCalls = "tool_calls"
)

// ChatCompletionChunk is one event of a streaming response.
type ChatCompletionChunk struct {
	// ID is the same in every chunk of a response ("chatcmpl-...").
	ID string `json:"id"`
	// Object is always "chat.completion.chunk".
	Object string `json:"object"`
	// Created is the response's creation time in Unix seconds.
	Created int64 `json:"created"`
	// Model echoes the requested model.
	Model string `json:"model"`
	// Choices holds the one choice of the response, or is empty (never
	// null) in the usage chunk.
	Choices []ChunkChoice `json:"choices"`
	// Usage is set only in the usage chunk.
	Usage *Usage `json:"usage,omitempty"`
}

// ChunkChoice is the choice of a chunk.
type ChunkChoice struct {
	// Index is always 0.
	Index int `json:"index"`
	// Delta is what this chunk adds to the message.
	Delta Delta `json:"delta"`
	// FinishReason is null until the final chunk, which says "stop",
	// "length" or "tool_calls".
	FinishReason *string `json:"finish_reason"`
}

// Delta is a piece of the assistant message.
type Delta struct {
	// Role is "assistant" in the first chunk only.
	Role string `json:"role,omitempty"`
	// Content is a piece of the answer text.
	Content *string `json:"content,omitempty"`
	// ReasoningContent is a piece of the model's thinking (when enabled),
	// the field DeepSeek-style clients such as LibreChat and Open WebUI show
	// as reasoning.
	ReasoningContent *string `json:"reasoning_content,omitempty"`
	// ToolCalls are calls of the client's functions, one whole call per
	// chunk.
	ToolCalls []ToolCallDelta `json:"tool_calls,omitempty"`
}

// ChatCompletion is a non-streaming response.
type ChatCompletion struct {
	// ID identifies the response ("chatcmpl-...").
	ID string `json:"id"`
	// Object is always "chat.completion".
	Object string `json:"object"`
	// Created is the response's creation time in Unix seconds.
	Created int64 `json:"created"`
	// Model echoes the requested model.
	Model string `json:"model"`
	// Choices holds exactly one choice.
	Choices []Choice `json:"choices"`
	// Usage is the turn's token usage.
	Usage Usage `json:"usage"`
}

// Choice is the choice of a non-streaming response.
type Choice struct {
	// Index is always 0.
	Index int `json:"index"`
	// Message is the assistant's answer.
	Message CompletionMessage `json:"message"`
	// FinishReason is "stop", "length" or "tool_calls".
	FinishReason string `json:"finish_reason"`
}

// CompletionMessage is the assistant message of a non-streaming response.
type CompletionMessage struct {
	// Role is always "assistant".
	Role string `json:"role"`
	// Content is the answer text, including rendered tool activity. It is
	// written as null when it is empty and there are tool calls.
	Content string `json:"content"`
	// ReasoningContent is the model's thinking, when enabled and present.
	ReasoningContent string `json:"reasoning_content,omitempty"`
	// ToolCalls are the calls of the client's functions that end the
	// answer (finish_reason "tool_calls").
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// MarshalJSON writes the message with a null content when it has tool
// calls and no text, as OpenAI does.
func (m CompletionMessage) MarshalJSON() ([]byte, error) {
	type plain CompletionMessage
	if m.Content != "" || len(m.ToolCalls) == 0 {
		return json.Marshal(plain(m))
	}
	return json.Marshal(struct {
		Role             string     `json:"role"`
		Content          *string    `json:"content"`
		ReasoningContent string     `json:"reasoning_content,omitempty"`
		ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
	}{m.Role, nil, m.ReasoningContent, m.ToolCalls})
}

// AssistantMessage returns the assistant message a client sends back for
// an answer of content and tool calls (a StreamWriter's Content and
// ToolCalls): for the fingerprint of the conversation after the turn.
func AssistantMessage(content string, calls []ToolCall) Message {
	return Message{Role: RoleAssistant, Content: TextContent(content), ToolCalls: calls}
}

// Usage counts a turn's tokens.
type Usage struct {
	// PromptTokens counts all input tokens: uncached, read from cache and
	// written to cache.
	PromptTokens int64 `json:"prompt_tokens"`
	// CompletionTokens counts generated tokens.
	CompletionTokens int64 `json:"completion_tokens"`
	// TotalTokens is PromptTokens + CompletionTokens.
	TotalTokens int64 `json:"total_tokens"`
	// PromptTokensDetails breaks down PromptTokens; set when some input was
	// read from cache.
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// PromptTokensDetails breaks down the prompt tokens.
type PromptTokensDetails struct {
	// CachedTokens counts input tokens read from the prompt cache.
	CachedTokens int64 `json:"cached_tokens"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	// Object is always "list".
	Object string `json:"object"`
	// Data holds the models (never null).
	Data []Model `json:"data"`
}

// Model is one entry of a [ModelList].
type Model struct {
	// ID is the model id clients put in requests.
	ID string `json:"id"`
	// Object is always "model".
	Object string `json:"object"`
	// Created is a Unix time in seconds.
	Created int64 `json:"created"`
	// OwnedBy names the owner (e.g. "agcluster").
	OwnedBy string `json:"owned_by"`
}

// NewID returns a new random response id: "chatcmpl-" and 26 base32
// characters.
func NewID() string { return "chatcmpl-" + rand.Text() }

// SetStreamHeaders sets the response headers of an SSE stream:
// text/event-stream, no caching, and no buffering by nginx-style proxies.
func SetStreamHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
}

// WriteModels writes a [ModelList] holding models with status 200. Models
// with an empty Object get "model".
func WriteModels(w http.ResponseWriter, models []Model) {
	list := ModelList{Object: ObjectList, Data: make([]Model, len(models))}
	for i, m := range models {
		if m.Object == "" {
			m.Object = ObjectModel
		}
		list.Data[i] = m
	}
	writeJSON(w, http.StatusOK, list)
}

// WriteCompletion writes c with status 200.
func WriteCompletion(w http.ResponseWriter, c *ChatCompletion) {
	writeJSON(w, http.StatusOK, c)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only unsupported values fail; none of this package's types has one.
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"message":"could not encode the response","type":"api_error","param":null,"code":"internal_error"}}`)
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
