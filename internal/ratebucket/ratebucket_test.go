package ratebucket_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/agcluster/caddy-agcluster/internal/ratebucket"
)

func TestTake(t *testing.T) {
	var b ratebucket.Buckets
	for i := range 3 {
		ok, _ := b.Take("a", 1, 0.001, 3)
		assert.True(t, ok, "token %d of the burst", i)
	}
	ok, wait := b.Take("a", 1, 0.001, 3)
	assert.False(t, ok, "the burst is spent")
	assert.Greater(t, wait, time.Minute, "a token comes back after 1000s")
	ok, _ = b.Take("b", 1, 0.001, 3)
	assert.True(t, ok, "another key has its own bucket")
	ok, wait = b.Take("c", 5, 1, 3)
	assert.False(t, ok, "more than the burst")
	assert.Equal(t, time.Minute, wait)
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {1500 * time.Millisecond, 2}, {3 * time.Second, 3}}
	for _, tt := range tests {
		assert.Equal(t, tt.want, ratebucket.RetryAfter(tt.d), tt.d)
	}
}
