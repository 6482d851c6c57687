package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// ttft streams one completion and returns the time to its first content.
// Failures are reported with b.Error (it may run on other goroutines);
// callers stop with b.FailNow when b.Failed.
func ttft(b *testing.B, c openai.Client, text string, opts ...option.RequestOption) time.Duration {
	start := time.Now()
	s := c.Chat.Completions.NewStreaming(context.Background(), user(text), opts...)
	var first time.Duration
	for s.Next() {
		ch := s.Current()
		if first == 0 && len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			first = time.Since(start)
		}
	}
	if err := s.Err(); err != nil {
		b.Error(err)
		return 0
	}
	if first == 0 {
		b.Error("no content")
	}
	return first
}
