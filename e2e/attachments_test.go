package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/color"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/internal/anthropictest"
)

// partsRequest is an "agent" request whose one user message has these
// content parts.
func partsRequest(parts ...openai.ChatCompletionContentPartUnionParam) openai.ChatCompletionNewParams {
	return chatRequest([]openai.ChatCompletionMessageParamUnion{openai.UserMessage(parts)})
}

func imagePart(url string) openai.ChatCompletionContentPartUnionParam {
	return openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: url})
}

// TestAttachments: an image part reaches the model as an image block; a
// file part lands in the workspace under uploads/ and is named in the
// prompt; images over the limits and remote images are refused before any
// agent runs.
func TestAttachments(t *testing.T) {
	e := setup(t)
	g := e.startGateway(t, "30m", "")
	const key = "sk-ant-test-attachments"
	c := g.client(key)

	t.Run("image reaches the model", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "A small red square."}})
		img := pngImage(t, 4, 4, color.NRGBA{R: 255, A: 255})
		got, err := streamed(t, c, partsRequest(openai.TextContentPart("What is in this picture?"), imagePart(dataURL("image/png", img))), conv("c-image"))
		require.NoError(t, err)
		assert.Equal(t, "A small red square.", got.Choices[0].Message.Content)
		req := e.lastCLIRequest(t)
		assert.Contains(t, req.LastUserText(), "What is in this picture?")
		images := lastUserImages(t, req)
		require.Len(t, images, 1, "one image block beside the text")
		assert.Equal(t, "base64", images[0].Source.Type)
		assert.Equal(t, "image/png", images[0].Source.MediaType)
		data, err := base64.StdEncoding.DecodeString(images[0].Source.Data)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(img, data), "the image's bytes reach the model unchanged")
	})

	t.Run("a title request keeps its image and needs no agent", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Red Square Picture"}})
		before := e.agentCount(t, g)
		img := pngImage(t, 3, 3, color.NRGBA{R: 200, A: 255})
		params := partsRequest(openai.TextContentPart("Title for a chat about this picture"), imagePart(dataURL("image/png", img)))
		params.Model = "gpt-4o-mini" // a task model of the test gateway
		got, err := c.Chat.Completions.New(ctxFor(t, time.Minute), params)
		require.NoError(t, err)
		assert.Equal(t, "Red Square Picture", got.Choices[0].Message.Content)
		assert.Equal(t, before, e.agentCount(t, g), "answered one-shot")
		assert.Empty(t, e.cliRequests(t), "no agent called the model")
		reqs, err := e.mock.Requests(context.Background())
		require.NoError(t, err)
		require.NotEmpty(t, reqs)
		images := lastUserImages(t, reqs[len(reqs)-1])
		require.Len(t, images, 1, "the one-shot call carries the image")
		data, err := base64.StdEncoding.DecodeString(images[0].Source.Data)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(img, data))
	})

	t.Run("file lands in uploads", func(t *testing.T) {
		e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Read your notes."}})
		const notes = "alpha\nbeta\ngamma\n"
		file := openai.FileContentPart(openai.ChatCompletionContentPartFileFileParam{
			FileData: openai.String(dataURL("text/plain", []byte(notes))),
			Filename: openai.String("notes.txt"),
		})
		var sid string
		_, err := c.Chat.Completions.New(ctxFor(t, 2*time.Minute),
			partsRequest(openai.TextContentPart("Summarize the attached notes."), file), conv("c-file"), sessionInto(&sid))
		require.NoError(t, err)
		require.NotEmpty(t, sid, "X-Session-ID names the session")

		path := uploadedFile(t, g, key, sid, "notes.txt")
		assert.True(t, strings.HasPrefix(path, "uploads/"), path)
		r := g.workspaceFile(t, key, sid, path)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		assert.Equal(t, notes, string(r.body))
		prompt := e.lastCLIRequest(t).LastUserText()
		assert.Contains(t, prompt, "Summarize the attached notes.")
		assert.Contains(t, prompt, path, "the prompt names the file")
	})

	small := dataURL("image/png", pngImage(t, 2, 2, color.NRGBA{B: 255, A: 255}))
	// 1400 x 1400 opaque, uncompressed (3 bytes a pixel): about 5.9 MB of
	// image, over the 5 MiB limit, 7.8 MB as base64.
	bigPNG := pngImage(t, 1400, 1400, color.NRGBA{G: 255, A: 255})
	require.Greater(t, len(bigPNG), 5<<20, "the big image must be over the limit")
	big := dataURL("image/png", bigPNG)
	many := []openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("Compare these.")}
	for range 21 {
		many = append(many, imagePart(small))
	}
	for _, tc := range []struct {
		name   string
		parts  []openai.ChatCompletionContentPartUnionParam
		status int
	}{
		{"image over 5 MB", []openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("Look."), imagePart(big)}, http.StatusRequestEntityTooLarge},
		{"21 images", many, http.StatusBadRequest},
		{"https image URL", []openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("Look."), imagePart("https://images.example.com/cat.png")}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.script(t, anthropictest.Script{Default: &anthropictest.Response{Text: "Should not run."}})
			before := e.agentCount(t, g)
			_, err := c.Chat.Completions.New(ctxFor(t, time.Minute), partsRequest(tc.parts...), conv("c-limits"))
			apiErr := apiError(t, err)
			assert.Equal(t, tc.status, apiErr.StatusCode)
			assert.Contains(t, strings.ToLower(apiErr.Message), "image", "the message says what is wrong")
			assert.Equal(t, before, e.agentCount(t, g), "no agent for a refused request")
			assert.Zero(t, len(e.cliRequests(t)), "nothing reached the model")
		})
	}
}

// uploadedFile finds the workspace path of an uploaded file by its name,
// under uploads/.
func uploadedFile(t *testing.T, g *gateway, key, sessionID, name string) string {
	t.Helper()
	r := api{t: t, g: g, key: key}.do(http.MethodGet, "/api/agents/sessions/"+sessionID+"/files?path=uploads", nil, "")
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	var tree struct {
		Entries []struct {
			Path string `json:"path"`
			Type string `json:"type"`
		} `json:"entries"`
	}
	require.NoError(t, json.Unmarshal(r.body, &tree), string(r.body))
	for _, en := range tree.Entries {
		if en.Type == "file" && (en.Path == name || strings.HasSuffix(en.Path, "/"+name)) {
			return en.Path
		}
	}
	t.Fatalf("no %s under uploads/: %s", name, r.body)
	return ""
}
