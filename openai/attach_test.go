package openai

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agcluster/caddy-agcluster/agent"
)

// testImage is a small real image of the given format.
func testImage(t testing.TB, format string) []byte {
	t.Helper()
	img := image.NewPaletted(image.Rect(0, 0, 4, 3), color.Palette{color.White, color.Black})
	img.SetColorIndex(1, 1, 1)
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "gif":
		err = gif.Encode(&buf, img, nil)
	case "webp":
		// The 1x1 lossless WebP of Modernizr's feature test (no encoder in
		// the standard library).
		b, derr := base64.StdEncoding.DecodeString("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
		require.NoError(t, derr)
		return b
	default:
		t.Fatalf("unknown format %q", format)
	}
	require.NoError(t, err)
	return buf.Bytes()
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func dataURL(mt string, b []byte) string { return "data:" + mt + ";base64," + b64(b) }

// userParts is a request body whose messages are msgs and then a user
// message with the given parts.
func userParts(parts string, msgs ...string) string {
	msgs = append(msgs, `{"role":"user","content":[`+parts+`]}`)
	return `{"model":"agent","messages":[` + strings.Join(msgs, ",") + `]}`
}

func imagePart(u string) string {
	q, _ := json.Marshal(u)
	return `{"type":"image_url","image_url":{"url":` + string(q) + `,"detail":"high"}}`
}

func filePart(data, name string) string {
	f, _ := json.Marshal(FilePart{FileData: data, Filename: name})
	return `{"type":"file","file":` + string(f) + `}`
}

const textPart = `{"type":"text","text":"what is this?"}`

func TestAttachments(t *testing.T) {
	pngData, jpegData, gifData, webpData := testImage(t, "png"), testImage(t, "jpeg"), testImage(t, "gif"), testImage(t, "webp")
	pdf := []byte("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n")
	wrapped := b64(pngData)
	wrapped = wrapped[:10] + "\r\n" + wrapped[10:20] + " \n" + wrapped[20:]
	urlSafe := strings.TrimRight(base64.URLEncoding.EncodeToString(jpegData), "=")
	allowHost := func(u *url.URL) bool { return u.Host == "images.test" }

	type wantImage struct {
		mt, url string
		data    []byte
	}
	type wantFile struct {
		name, mt string
		data     []byte
	}
	tests := []struct {
		name   string
		body   string
		opts   ParseOptions
		status int
		param  string
		code   string
		msg    string
		text   string // LastUserText
		full   string // the last message's Content.Text
		images []wantImage
		files  []wantFile
	}{
		// Images.
		{name: "png data URL", body: userParts(textPart + "," + imagePart(dataURL("image/png", pngData))),
			text: "what is this?", full: "what is this?\n[image]", images: []wantImage{{mt: MediaPNG, data: pngData}}},
		{name: "each accepted type", body: userParts(imagePart(dataURL("image/png", pngData)) + "," + imagePart(dataURL("image/jpeg", jpegData)) + "," +
			imagePart(dataURL("image/gif", gifData)) + "," + imagePart(dataURL("image/webp", webpData))),
			full:   "[image]\n[image]\n[image]\n[image]",
			images: []wantImage{{mt: MediaPNG, data: pngData}, {mt: MediaJPEG, data: jpegData}, {mt: MediaGIF, data: gifData}, {mt: MediaWebP, data: webpData}}},
		{name: "image/jpg and upper case", body: userParts(imagePart("DATA:Image/JPG;BASE64," + b64(jpegData))),
			images: []wantImage{{mt: MediaJPEG, data: jpegData}}},
		{name: "the bytes decide the type", body: userParts(imagePart(dataURL("image/png", jpegData))),
			images: []wantImage{{mt: MediaJPEG, data: jpegData}}},
		{name: "data URL parameters", body: userParts(imagePart("data:image/png;name=x.png;base64," + b64(pngData))),
			images: []wantImage{{mt: MediaPNG, data: pngData}}},
		{name: "line-wrapped base64", body: userParts(imagePart("data:image/png;base64," + wrapped)),
			images: []wantImage{{mt: MediaPNG, data: pngData}}},
		{name: "URL-safe unpadded base64", body: userParts(imagePart("data:image/jpeg;base64," + urlSafe)),
			images: []wantImage{{mt: MediaJPEG, data: jpegData}}},
		{name: "image_url as a bare string", body: userParts(`{"type":"image_url","image_url":"` + dataURL("image/gif", gifData) + `"}`),
			images: []wantImage{{mt: MediaGIF, data: gifData}}},
		{name: "image only", body: userParts(imagePart(dataURL("image/png", pngData))), text: "", full: "[image]",
			images: []wantImage{{mt: MediaPNG, data: pngData}}},
		{name: "at the image limit", opts: ParseOptions{MaxImages: 2},
			body:   userParts(imagePart(dataURL("image/png", pngData)) + "," + imagePart(dataURL("image/png", pngData))),
			images: []wantImage{{mt: MediaPNG, data: pngData}, {mt: MediaPNG, data: pngData}}},
		{name: "history images do not count", opts: ParseOptions{MaxImages: 1},
			body: userParts(textPart,
				`{"role":"user","content":[`+imagePart(dataURL("image/png", pngData))+","+imagePart(dataURL("image/png", pngData))+`]}`,
				`{"role":"assistant","content":"two cats"}`),
			text: "what is this?"},
		{name: "exactly at the size limit", opts: ParseOptions{MaxImageBytes: int64(len(pngData))},
			body: userParts(imagePart(dataURL("image/png", pngData))), images: []wantImage{{mt: MediaPNG, data: pngData}}},
		{name: "allowed image URL", opts: ParseOptions{FetchImageURL: allowHost},
			body: userParts(imagePart("https://images.test/cat.png")), images: []wantImage{{url: "https://images.test/cat.png"}}},

		{name: "over the image size limit", opts: ParseOptions{MaxImageBytes: int64(len(pngData)) - 1},
			body:   userParts(textPart + "," + imagePart(dataURL("image/png", pngData))),
			status: 413, param: "messages[0].content[1].image_url.url", code: "image_too_large", msg: "over the limit"},
		{name: "over the image count", opts: ParseOptions{MaxImages: 2},
			body:   userParts(imagePart(dataURL("image/png", pngData)) + "," + imagePart(dataURL("image/png", pngData)) + "," + imagePart(dataURL("image/png", pngData))),
			status: 400, param: "messages[0].content[2]", msg: "too many images"},
		{name: "default image count", body: userParts(strings.Repeat(imagePart(dataURL("image/gif", gifData))+",", 20) + imagePart(dataURL("image/gif", gifData))),
			status: 400, param: "messages[0].content[20]", msg: "limit is 20"},
		{name: "svg", body: userParts(imagePart("data:image/svg+xml;base64," + b64([]byte("<svg/>")))),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "unsupported image type"},
		{name: "not base64 encoded", body: userParts(imagePart("data:image/png,%89PNG")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "must be base64"},
		{name: "no comma", body: userParts(imagePart("data:image/png;base64")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "no comma"},
		{name: "bad base64", body: userParts(imagePart("data:image/png;base64,iVBO*w0KGgo=")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "not valid base64"},
		{name: "bad base64 length", body: userParts(imagePart("data:image/png;base64,iVBORw0KG")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "not valid base64"},
		{name: "not an image", body: userParts(imagePart(dataURL("image/png", []byte("hello, world")))),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "not a PNG"},
		{name: "empty image", body: userParts(imagePart("data:image/png;base64,")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "not a PNG"},
		{name: "image URL refused by default", body: userParts(imagePart("https://images.test/cat.png")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "not fetched"},
		{name: "image URL of another host", opts: ParseOptions{FetchImageURL: allowHost}, body: userParts(imagePart("http://evil.test/cat.png")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "not fetched"},
		{name: "other scheme", opts: ParseOptions{FetchImageURL: allowHost}, body: userParts(imagePart("file:///etc/passwd")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: `scheme "file"`},
		{name: "no scheme", body: userParts(imagePart("cat.png")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "not a valid URL"},
		{name: "no host", opts: ParseOptions{FetchImageURL: allowHost}, body: userParts(imagePart("https:///cat.png")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "no host"},
		{name: "empty URL", body: userParts(imagePart("")),
			status: 400, param: "messages[0].content[0].image_url.url", msg: "required"},
		{name: "image_url missing", body: userParts(`{"type":"image_url"}`),
			status: 400, param: "messages[0].content[0].image_url", msg: "required"},
		{name: "image_url a number", body: userParts(`{"type":"image_url","image_url":5}`),
			status: 400, param: "messages[0].content[0].image_url", msg: "expected an object"},
		{name: "image in an assistant message", body: userParts(textPart, `{"role":"user","content":"hi"}`,
			`{"role":"assistant","content":[`+imagePart(dataURL("image/png", pngData))+`]}`),
			status: 400, param: "messages[1].content[0]", msg: "only allowed in user messages"},
		{name: "bad image in history", body: userParts(textPart, `{"role":"user","content":[`+imagePart("data:image/png;base64,AAAA")+`]}`,
			`{"role":"assistant","content":"?"}`),
			status: 400, param: "messages[0].content[0].image_url.url"},

		// Files.
		{name: "pdf data URL", body: userParts(textPart + "," + filePart(dataURL("application/pdf", pdf), "report.pdf")),
			text: "what is this?", full: "what is this?\n[file: report.pdf]", files: []wantFile{{name: "report.pdf", mt: "application/pdf", data: pdf}}},
		{name: "bare base64 typed by name", body: userParts(filePart(b64([]byte("# Notes\n")), "notes.MD")),
			full: "[file: notes.MD]", files: []wantFile{{name: "notes.MD", mt: "text/markdown", data: []byte("# Notes\n")}}},
		{name: "bare base64 typed by content, default name", body: userParts(filePart(b64(pdf), "")),
			full: "[file]", files: []wantFile{{name: "file.pdf", mt: "application/pdf", data: pdf}}},
		{name: "unknown binary", body: userParts(filePart(b64([]byte{0, 1, 2, 3, 0xfe}), "blob")),
			files: []wantFile{{name: "blob", mt: "application/octet-stream", data: []byte{0, 1, 2, 3, 0xfe}}}},
		{name: "data URL without a type", body: userParts(filePart("data:;base64,"+b64([]byte("plain words")), "a")),
			files: []wantFile{{name: "a", mt: "text/plain", data: []byte("plain words")}}},
		{name: "data URL type with charset", body: userParts(filePart("data:text/csv;charset=utf-8;base64,"+b64([]byte("a,b\n")), "t.csv")),
			files: []wantFile{{name: "t.csv", mt: "text/csv", data: []byte("a,b\n")}}},
		{name: "path in the name", body: userParts(filePart(dataURL("text/plain", []byte("x")), "../../etc/passwd")),
			full: "[file: passwd]", files: []wantFile{{name: "passwd", mt: "text/plain", data: []byte("x")}}},
		{name: "windows path and NUL in the name", body: userParts(filePart(dataURL("text/plain", []byte("x")), `C:\Users\me\a`+"\x00"+`b.txt`)),
			files: []wantFile{{name: "a_b.txt", mt: "text/plain", data: []byte("x")}}},
		{name: "name of dots", body: userParts(filePart(dataURL("application/pdf", pdf), "..")),
			full: "[file]", files: []wantFile{{name: "file.pdf", mt: "application/pdf", data: pdf}}},
		{name: "image file stays a file", body: userParts(filePart(dataURL("image/png", pngData), "cat.png")),
			files: []wantFile{{name: "cat.png", mt: MediaPNG, data: pngData}}},
		{name: "files and images in order", body: userParts(imagePart(dataURL("image/png", pngData)) + "," + filePart(dataURL("text/plain", []byte("1")), "1.txt") + "," +
			textPart + "," + filePart(dataURL("text/plain", []byte("2")), "2.txt")),
			text: "what is this?", full: "[image]\n[file: 1.txt]\nwhat is this?\n[file: 2.txt]",
			images: []wantImage{{mt: MediaPNG, data: pngData}},
			files:  []wantFile{{name: "1.txt", mt: "text/plain", data: []byte("1")}, {name: "2.txt", mt: "text/plain", data: []byte("2")}}},

		{name: "file_id", body: userParts(`{"type":"file","file":{"file_id":"file-abc"}}`),
			status: 400, param: "messages[0].content[0].file.file_id", msg: "no Files API"},
		{name: "file_data missing", body: userParts(`{"type":"file","file":{"filename":"a.txt"}}`),
			status: 400, param: "messages[0].content[0].file.file_data", msg: "required"},
		{name: "file missing", body: userParts(`{"type":"file"}`),
			status: 400, param: "messages[0].content[0].file", msg: "required"},
		{name: "filename a number", body: userParts(`{"type":"file","file":{"file_data":"eA==","filename":5}}`),
			status: 400, param: "messages[0].content[0].file.filename"},
		{name: "over the file size limit", opts: ParseOptions{MaxFileBytes: int64(len(pdf)) - 1},
			body:   userParts(textPart + "," + filePart(dataURL("application/pdf", pdf), "r.pdf")),
			status: 413, param: "messages[0].content[1].file.file_data", code: "file_too_large", msg: "over the limit"},
		{name: "over the file count", opts: ParseOptions{MaxFiles: 1},
			body:   userParts(filePart(b64(pdf), "a.pdf") + "," + filePart(b64(pdf), "b.pdf")),
			status: 400, param: "messages[0].content[1]", msg: "too many files"},
		{name: "empty file", body: userParts(filePart("data:text/plain;base64,", "a.txt")),
			status: 400, param: "messages[0].content[0].file.file_data", msg: "empty"},
		{name: "bad file base64", body: userParts(filePart("data:text/plain;base64,@@@@", "a.txt")),
			status: 400, param: "messages[0].content[0].file.file_data", msg: "not valid base64"},
		{name: "percent-encoded data URL", body: userParts(filePart("data:text/plain,hello", "a.txt")),
			status: 400, param: "messages[0].content[0].file.file_data", msg: "must be base64"},
		{name: "bad media type", body: userParts(filePart("data:text/;base64,eA==", "a.txt")),
			status: 400, param: "messages[0].content[0].file.file_data", msg: "invalid media type"},
		{name: "file in a system message", body: userParts(textPart, `{"role":"system","content":[`+filePart(b64(pdf), "a.pdf")+`]}`),
			status: 400, param: "messages[0].content[0]", msg: "only allowed in user messages"},
		{name: "file in a tool message", body: userParts(textPart, `{"role":"tool","tool_call_id":"c","content":[`+filePart(b64(pdf), "a.pdf")+`]}`),
			status: 400, param: "messages[0].content[0]", msg: "only allowed in user messages"},
		{name: "empty user message of parts", body: userParts(`{"type":"text","text":" "}`),
			status: 400, param: "messages[0].content", msg: "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, e := ParseRequest(strings.NewReader(tc.body), tc.opts)
			if tc.status != 0 {
				require.NotNil(t, e, "accepted")
				assert.Nil(t, req)
				assert.Equal(t, tc.status, e.Status, e.Message)
				require.NotNil(t, e.Param, e.Message)
				assert.Equal(t, tc.param, *e.Param, e.Message)
				assert.Contains(t, e.Message, tc.msg)
				assert.Equal(t, TypeInvalidRequest, e.Type)
				if tc.code != "" {
					require.NotNil(t, e.Code)
					assert.Equal(t, tc.code, *e.Code)
					assert.Equal(t, false, *e.ShouldRetry)
				}
				return
			}
			require.Nil(t, e, "%v", e)
			last := req.Messages[len(req.Messages)-1]
			assert.Equal(t, tc.text, req.LastUserText())
			if tc.full != "" {
				assert.Equal(t, tc.full, last.Content.Text())
			}
			a := req.Attachments()
			require.Len(t, a.Images, len(tc.images))
			require.Len(t, a.Files, len(tc.files))
			assert.Equal(t, len(tc.images)+len(tc.files) == 0, a.Empty())
			var agentImages []agent.Image
			for i, w := range tc.images {
				got := a.Images[i]
				assert.Contains(t, got.Param, ".image_url.url")
				if w.url != "" {
					assert.Equal(t, w.url, got.URL)
					assert.Empty(t, got.Data)
					continue
				}
				assert.Empty(t, got.URL)
				assert.Equal(t, w.mt, got.MediaType)
				assert.Equal(t, b64(w.data), got.Data, "normalised to standard base64")
				assert.Equal(t, int64(len(w.data)), got.Size)
				agentImages = append(agentImages, agent.Image{MediaType: w.mt, Data: b64(w.data)})
			}
			assert.Equal(t, agentImages, a.AgentImages())
			for i, w := range tc.files {
				got := a.Files[i]
				assert.Equal(t, w.name, got.Filename)
				assert.Equal(t, w.mt, got.MediaType)
				assert.Equal(t, int64(len(w.data)), got.Size)
				b, err := got.Bytes()
				require.NoError(t, err)
				assert.Equal(t, w.data, b)
				assert.Contains(t, got.Param, ".file.file_data")
			}
		})
	}
}

func TestAttachmentParams(t *testing.T) {
	pngData := testImage(t, "png")
	body := userParts(textPart+","+imagePart(dataURL("image/png", pngData))+","+filePart(b64(pngData), "c.png"),
		`{"role":"system","content":"s"}`, `{"role":"user","content":"hi"}`, `{"role":"assistant","content":"yes?"}`)
	req, e := ParseRequest(strings.NewReader(body), ParseOptions{})
	require.Nil(t, e, "%v", e)
	a := req.Attachments()
	require.Len(t, a.Images, 1)
	require.Len(t, a.Files, 1)
	assert.Equal(t, "messages[3].content[1].image_url.url", a.Images[0].Param)
	assert.Equal(t, "messages[3].content[2].file.file_data", a.Files[0].Param)
}

func TestAttachmentsOnlyOfTheNewMessage(t *testing.T) {
	pngData := testImage(t, "png")
	for name, body := range map[string]string{
		"ends in tool results": `{"model":"agent","messages":[{"role":"user","content":[` + imagePart(dataURL("image/png", pngData)) + `]},
			{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
			{"role":"tool","tool_call_id":"c1","content":"r"}]}`,
		"image earlier": `{"model":"agent","messages":[{"role":"user","content":[` + imagePart(dataURL("image/png", pngData)) + `]},
			{"role":"assistant","content":"a cat"},{"role":"user","content":"and now?"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			req, e := ParseRequest(strings.NewReader(body), ParseOptions{})
			require.Nil(t, e, "%v", e)
			assert.True(t, req.Attachments().Empty())
			assert.Equal(t, "[image]", req.Messages[0].Content.Text(), "history shows the image as a placeholder")
			assert.Contains(t, FormatHistory(req.Messages[:2]), "User: [image]")
		})
	}
}

func TestImageData(t *testing.T) {
	pngData := testImage(t, "png")
	img, e := ImageData("messages[0].content[0].image_url.url", pngData, 0)
	require.Nil(t, e)
	assert.Equal(t, Image{Param: "messages[0].content[0].image_url.url", MediaType: MediaPNG, Data: b64(pngData), Size: int64(len(pngData))}, img)
	assert.Equal(t, agent.Image{MediaType: MediaPNG, Data: b64(pngData)}, img.Agent())

	_, e = ImageData("p", pngData, int64(len(pngData))-1)
	require.NotNil(t, e)
	assert.Equal(t, 413, e.Status)
	assert.Equal(t, "p", *e.Param)
	assert.Equal(t, "image_too_large", *e.Code)

	_, e = ImageData("p", []byte("<html>not an image</html>"), 0)
	require.NotNil(t, e)
	assert.Equal(t, 400, e.Status)
	assert.Equal(t, "p", *e.Param)
}

func TestSanitizeFilename(t *testing.T) {
	long := strings.Repeat("é", 200) + ".txt" // 404 bytes
	tests := []struct{ in, want string }{
		{"report.pdf", "report.pdf"},
		{"  spaced name.txt  ", "spaced name.txt"},
		{"/etc/passwd", "passwd"},
		{`..\..\boot.ini`, "boot.ini"},
		{"dir/", ""},
		{"..", ""},
		{".bashrc", "bashrc"},
		{"a\x00b", "a_b"},
		{"tab\there\nnl", "tab_here_nl"},
		{"bad\xffutf8", "bad_utf8"},
		{"c1\u0085ctl", "c1_ctl"},
		{"ünïcödé 🔧.md", "ünïcödé 🔧.md"},
		{"trailing dot.", "trailing dot"},
		{long, strings.Repeat("é", 125) + ".txt"},
		{strings.Repeat("a", 300) + "." + strings.Repeat("x", 20), strings.Repeat("a", 255)},
	}
	for _, tc := range tests {
		got := sanitizeFilename(tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
		assert.LessOrEqual(t, len(got), maxFilenameBytes)
		assert.True(t, utf8.ValidString(got))
	}
}

func TestContentText(t *testing.T) {
	parts := func(ps ...ContentPart) Content { return Content{Parts: ps} }
	txt := func(s string) ContentPart { return ContentPart{Type: PartText, Text: s} }
	img := ContentPart{Type: PartImageURL, ImageURL: &ImageURL{URL: "data:image/png;base64,AAAA"}}
	file := func(name string) ContentPart {
		return ContentPart{Type: PartFile, File: &FilePart{FileData: "eA==", Filename: name}}
	}
	tests := []struct {
		name       string
		c          Content
		text, only string
	}{
		{"null", Content{}, "", ""},
		{"string", TextContent("hi"), "hi", "hi"},
		{"one text part", parts(txt("a")), "a", "a"},
		{"text parts", parts(txt("a"), txt(""), txt("b")), "a\n\nb", "a\n\nb"},
		{"image only", parts(img), "[image]", ""},
		{"text and image", parts(txt("look"), img), "look\n[image]", "look"},
		{"files", parts(file("dir/a.pdf"), file(""), txt("x")), "[file: a.pdf]\n[file]\nx", "x"},
		{"refusal skipped", parts(ContentPart{Type: PartRefusal, Refusal: "no"}, txt("y")), "y", "y"},
		{"file part without payload", parts(ContentPart{Type: PartFile}), "[file]", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.text, tc.c.Text())
			assert.Equal(t, tc.only, tc.c.TextOnly())
		})
	}
	// The placeholder does not depend on the image's encoding.
	other := parts(txt("look"), ContentPart{Type: PartImageURL, ImageURL: &ImageURL{URL: "https://x.test/a.png", Detail: "low"}})
	assert.Equal(t, parts(txt("look"), img).Text(), other.Text())
}

func TestNormalizeBase64(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"eA==", "eA=="},
		{"eA", "eA=="},
		{"eHk", "eHk="},
		{"eA=", "eA=="},
		{"e A\r\n= =", "eA=="},
		{"-_-_", "+/+/"},
	} {
		assert.Equal(t, tc.want, normalizeBase64(tc.in), "%q", tc.in)
	}
	s := "aGVsbG8="
	assert.Equal(t, s, normalizeBase64(s))
}
