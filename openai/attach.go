package openai

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/agcluster/caddy-agcluster/agent"
)

// Attachment limits [ParseOptions] applies when given zero or less.
const (
	// DefaultMaxImageBytes caps one image, decoded: 5 MiB, the Anthropic
	// API's per-image limit.
	DefaultMaxImageBytes int64 = 5 << 20
	// DefaultMaxImages caps the images of the new user message (20, as
	// claude.ai allows per message).
	DefaultMaxImages = 20
	// DefaultMaxFileBytes caps one file, decoded: 10 MiB.
	DefaultMaxFileBytes int64 = 10 << 20
	// DefaultMaxFiles caps the files of the new user message.
	DefaultMaxFiles = 10
)

// maxFilenameBytes caps a sanitised filename (the usual file system limit).
const maxFilenameBytes = 255

// Content part types.
const (
	// PartText is a "text" content part.
	PartText = "text"
	// PartImageURL is an "image_url" content part.
	PartImageURL = "image_url"
	// PartFile is a "file" content part.
	PartFile = "file"
	// PartRefusal is a "refusal" content part (assistant messages).
	PartRefusal = "refusal"
)

// Media types of the images the model accepts.
const (
	// MediaPNG is image/png.
	MediaPNG = "image/png"
	// MediaJPEG is image/jpeg.
	MediaJPEG = "image/jpeg"
	// MediaGIF is image/gif.
	MediaGIF = "image/gif"
	// MediaWebP is image/webp.
	MediaWebP = "image/webp"
)

// imageTypes are the accepted image media types; image/jpg, which some
// clients send, is taken as image/jpeg.
var imageTypes = map[string]string{
	MediaPNG: MediaPNG, MediaJPEG: MediaJPEG, "image/jpg": MediaJPEG, MediaGIF: MediaGIF, MediaWebP: MediaWebP,
}

// ImageURL is the payload of an "image_url" content part.
type ImageURL struct {
	// URL is an http(s) or data: URL.
	URL string `json:"url"`
	// Detail is "auto", "low" or "high"; accepted and ignored.
	Detail string `json:"detail,omitempty"`
}

// UnmarshalJSON decodes the object form and, as early vision clients sent
// it, a bare URL string.
func (u *ImageURL) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		u.Detail = ""
		return json.Unmarshal(data, &u.URL)
	}
	type plain ImageURL
	return json.Unmarshal(data, (*plain)(u))
}

// FilePart is the payload of a "file" content part, as OpenAI and
// LibreChat send it.
type FilePart struct {
	// FileData is the file as a data: URL ("data:<type>;base64,...") or as
	// bare base64.
	FileData string `json:"file_data,omitempty"`
	// FileID names an uploaded file; refused, there is no Files API here.
	FileID string `json:"file_id,omitempty"`
	// Filename is the file's name as the client gives it.
	Filename string `json:"filename,omitempty"`
}

// Image is an image attachment of a user message, validated.
type Image struct {
	// Param names the part's URL in errors, e.g.
	// "messages[2].content[1].image_url.url".
	Param string
	// MediaType is image/png, image/jpeg, image/gif or image/webp, as the
	// data shows (whatever the data: URL declared); empty for a URL image.
	MediaType string
	// Data is the image in standard base64; empty for a URL image.
	Data string
	// Size is the decoded size in bytes; 0 for a URL image.
	Size int64
	// URL is the http(s) URL of an image the gateway is to fetch (one that
	// [ParseOptions.FetchImageURL] allowed); empty for a data: image. Pass
	// the fetched bytes to [ImageData].
	URL string
}

// Agent returns the image for an agent query. A URL image must be
// fetched first ([ImageData]).
func (i Image) Agent() agent.Image { return agent.Image{MediaType: i.MediaType, Data: i.Data} }

// File is a file attachment of a user message, validated.
type File struct {
	// Param names the part's file_data in errors, e.g.
	// "messages[2].content[1].file.file_data".
	Param string
	// Filename is the sanitised base name: no directories, no control
	// characters, valid UTF-8, no leading dots, at most 255 bytes; "file"
	// with an extension for the media type when the client sent none.
	Filename string
	// MediaType is the data: URL's media type, or for bare base64 what the
	// file name or the data suggests ("application/octet-stream" failing
	// both).
	MediaType string
	// Data is the file in standard base64.
	Data string
	// Size is the decoded size in bytes.
	Size int64
}

// Bytes decodes the file.
func (f File) Bytes() ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(f.Data)
	if err != nil {
		return nil, fmt.Errorf("decode file %q: %w", f.Filename, err)
	}
	return b, nil
}

// Attachments are the images and files of a user message, in order.
type Attachments struct {
	// Images are the message's images.
	Images []Image
	// Files are the message's files.
	Files []File
}

// Empty reports whether there are no attachments.
func (a Attachments) Empty() bool { return len(a.Images) == 0 && len(a.Files) == 0 }

// AgentImages returns the data: images for an agent query
// (agent.QueryRequest.Images); URL images are left out until fetched.
func (a Attachments) AgentImages() []agent.Image {
	var out []agent.Image
	for _, img := range a.Images {
		if img.Data != "" {
			out = append(out, img.Agent())
		}
	}
	return out
}

// ParseOptions configure [ParseRequest]. The zero value takes every
// default and refuses image URLs.
type ParseOptions struct {
	// MaxBodyBytes caps the request body (zero or less:
	// [DefaultMaxBodyBytes]).
	MaxBodyBytes int64
	// MaxImageBytes caps one image, decoded (zero or less:
	// [DefaultMaxImageBytes]). Over it: 413.
	MaxImageBytes int64
	// MaxImages caps the images of the new user message (zero or less:
	// [DefaultMaxImages]). Over it: 400.
	MaxImages int
	// MaxFileBytes caps one file, decoded (zero or less:
	// [DefaultMaxFileBytes]). Over it: 413.
	MaxFileBytes int64
	// MaxFiles caps the files of the new user message (zero or less:
	// [DefaultMaxFiles]). Over it: 400.
	MaxFiles int
	// FetchImageURL tells whether the gateway will fetch an http(s) image
	// URL; the parser itself never fetches. An allowed URL is returned in
	// [Image.URL]; a refused one, or any when FetchImageURL is nil, is a
	// 400.
	FetchImageURL func(u *url.URL) bool
}

// normalize fills in the defaults.
func (o *ParseOptions) normalize() {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxImageBytes <= 0 {
		o.MaxImageBytes = DefaultMaxImageBytes
	}
	if o.MaxImages <= 0 {
		o.MaxImages = DefaultMaxImages
	}
	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = DefaultMaxFileBytes
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
}

// partCounter counts the attachments of the new user message against the
// limits; nil for other messages, whose attachments are history.
type partCounter struct {
	images, files int
}

// parsePart validates part j of a message's content (param names it) and
// attaches the image or file it carries. role is the message's role;
// count is non-nil for the new user message.
func (o *ParseOptions) parsePart(p *ContentPart, role, param string, count *partCounter) *Error {
	switch p.Type {
	case PartText:
		if strings.IndexByte(p.Text, 0) >= 0 {
			return BadRequest(param+" must not contain NUL bytes", param)
		}
	case PartRefusal:
		if role != RoleAssistant {
			return BadRequest(param+": refusal parts are only allowed in assistant messages", param)
		}
	case PartImageURL:
		if role != RoleUser {
			return BadRequest(param+": image parts are only allowed in user messages", param)
		}
		if count != nil {
			if count.images++; count.images > o.MaxImages {
				return BadRequest(fmt.Sprintf("%s: too many images in one message (the limit is %d)", param, o.MaxImages), param)
			}
		}
		img, e := o.parseImagePart(p.ImageURL, param)
		if e != nil {
			return e
		}
		p.image = img
	case PartFile:
		if role != RoleUser {
			return BadRequest(param+": file parts are only allowed in user messages", param)
		}
		if count != nil {
			if count.files++; count.files > o.MaxFiles {
				return BadRequest(fmt.Sprintf("%s: too many files in one message (the limit is %d)", param, o.MaxFiles), param)
			}
		}
		f, e := o.parseFilePart(p.File, param)
		if e != nil {
			return e
		}
		p.file = f
	case "":
		return BadRequest(param+".type is required", param+".type")
	default:
		return BadRequest(fmt.Sprintf("%s: content parts of type %q are not supported; send text, image_url or file parts", param, p.Type), param)
	}
	return nil
}

// parseImagePart validates an image_url part's payload.
func (o *ParseOptions) parseImagePart(iu *ImageURL, param string) (*Image, *Error) {
	if iu == nil {
		return nil, BadRequest(param+".image_url is required", param+".image_url")
	}
	uparam := param + ".image_url.url"
	raw := strings.TrimSpace(iu.URL)
	if raw == "" {
		return nil, BadRequest(uparam+" is required", uparam)
	}
	if hasPrefixFold(raw, "data:") {
		mt, data, e := parseDataURL(raw, uparam)
		if e != nil {
			return nil, e
		}
		if _, ok := imageTypes[mt]; !ok {
			return nil, BadRequest(fmt.Sprintf("%s: unsupported image type %q; send image/png, image/jpeg, image/gif or image/webp", uparam, mt), uparam)
		}
		img, e := decodeImage(data, uparam, o.MaxImageBytes)
		if e != nil {
			return nil, e
		}
		return &img, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return nil, BadRequest(uparam+" is not a valid URL; send a data: URL with the base64 image", uparam)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	default:
		return nil, BadRequest(fmt.Sprintf("%s: URL scheme %q is not supported; send a data: URL with the base64 image", uparam, u.Scheme), uparam)
	}
	if u.Host == "" {
		return nil, BadRequest(uparam+": the image URL has no host", uparam)
	}
	if o.FetchImageURL == nil || !o.FetchImageURL(u) {
		return nil, BadRequest(uparam+": image URLs are not fetched here; send the image as a data: URL (data:image/png;base64,...)", uparam)
	}
	return &Image{Param: uparam, URL: raw}, nil
}

// parseFilePart validates a file part's payload.
func (o *ParseOptions) parseFilePart(fp *FilePart, param string) (*File, *Error) {
	if fp == nil {
		return nil, BadRequest(param+".file is required", param+".file")
	}
	if fp.FileID != "" {
		return nil, BadRequest(param+".file.file_id: uploaded files are not supported (there is no Files API here); send the content in file_data", param+".file.file_id")
	}
	dparam := param + ".file.file_data"
	raw := strings.TrimSpace(fp.FileData)
	if raw == "" {
		return nil, BadRequest(dparam+" is required", dparam)
	}
	name := sanitizeFilename(fp.Filename)
	mt, data := "", raw
	if hasPrefixFold(raw, "data:") {
		var e *Error
		if mt, data, e = parseDataURL(raw, dparam); e != nil {
			return nil, e
		}
	}
	data = normalizeBase64(data)
	size, e := decodedSize(data, dparam)
	if e != nil {
		return nil, e
	}
	if size > o.MaxFileBytes {
		return nil, attachmentTooLarge(fmt.Sprintf("%s: the file is %d bytes, over the limit of %d bytes", dparam, size, o.MaxFileBytes), dparam, "file_too_large")
	}
	head, e := checkBase64(data, dparam)
	if e != nil {
		return nil, e
	}
	if size == 0 {
		return nil, BadRequest(dparam+": the file is empty", dparam)
	}
	if mt == "" {
		mt = guessMediaType(name, head)
	}
	if name == "" {
		name = "file" + extensionFor(mt)
	}
	return &File{Param: dparam, Filename: name, MediaType: mt, Data: data, Size: size}, nil
}

// ImageData validates image bytes the gateway fetched for a URL image
// (param is its [Image.Param]) and returns the data image: 413 over
// maxBytes (zero or less: [DefaultMaxImageBytes]), 400 when the bytes are
// no PNG, JPEG, GIF or WebP image.
func ImageData(param string, data []byte, maxBytes int64) (Image, *Error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxImageBytes
	}
	if int64(len(data)) > maxBytes {
		return Image{}, imageTooLarge(param, int64(len(data)), maxBytes)
	}
	mt := sniffImage(data)
	if mt == "" {
		return Image{}, BadRequest(param+": the data is not a PNG, JPEG, GIF or WebP image", param)
	}
	return Image{Param: param, MediaType: mt, Data: base64.StdEncoding.EncodeToString(data), Size: int64(len(data))}, nil
}

// decodeImage validates a data: URL's base64 image.
func decodeImage(data, param string, maxBytes int64) (Image, *Error) {
	data = normalizeBase64(data)
	size, e := decodedSize(data, param)
	if e != nil {
		return Image{}, e
	}
	if size > maxBytes {
		return Image{}, imageTooLarge(param, size, maxBytes)
	}
	head, e := checkBase64(data, param)
	if e != nil {
		return Image{}, e
	}
	// The API refuses an image whose bytes are not of the declared type,
	// and clients mislabel (a JPEG as image/png): the bytes decide.
	mt := sniffImage(head)
	if mt == "" {
		return Image{}, BadRequest(param+": the data is not a PNG, JPEG, GIF or WebP image", param)
	}
	return Image{Param: param, MediaType: mt, Data: data, Size: size}, nil
}

func imageTooLarge(param string, size, limit int64) *Error {
	return attachmentTooLarge(fmt.Sprintf("%s: the image is %d bytes, over the limit of %d bytes", param, size, limit), param, "image_too_large")
}

// attachmentTooLarge returns a 413 invalid_request_error naming the part.
func attachmentTooLarge(msg, param, code string) *Error {
	return newError(http.StatusRequestEntityTooLarge, TypeInvalidRequest, msg, param, code, boolPtr(false))
}

// parseDataURL splits "data:<media type>[;param]*;base64,<data>" into its
// lowercased media type (without parameters; "" when absent) and data.
func parseDataURL(raw, param string) (string, string, *Error) {
	meta, data, ok := strings.Cut(raw[len("data:"):], ",")
	if !ok {
		return "", "", BadRequest(param+" is not a valid data: URL (no comma)", param)
	}
	fields := strings.Split(meta, ";")
	if len(fields) < 2 || !strings.EqualFold(strings.TrimSpace(fields[len(fields)-1]), "base64") {
		return "", "", BadRequest(param+": the data: URL must be base64 (data:<type>;base64,...)", param)
	}
	mt := strings.ToLower(strings.TrimSpace(fields[0]))
	if mt == "" {
		return "", data, nil
	}
	parsed, _, err := mime.ParseMediaType(mt)
	if err != nil {
		return "", "", BadRequest(fmt.Sprintf("%s: invalid media type %q in the data: URL", param, mt), param)
	}
	return parsed, data, nil
}

// normalizeBase64 returns s as standard padded base64: without ASCII
// white space, with the URL-safe alphabet mapped and padding added. It
// returns s itself when there is nothing to change.
func normalizeBase64(s string) string {
	clean := len(s)%4 == 0
	for i := 0; clean && i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\r', '\n', '-', '_':
			clean = false
		}
	}
	if clean {
		return s
	}
	b := make([]byte, 0, len(s)+3)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\r', '\n':
		case '-':
			b = append(b, '+')
		case '_':
			b = append(b, '/')
		default:
			b = append(b, c)
		}
	}
	for len(b) > 0 && b[len(b)-1] == '=' {
		b = b[:len(b)-1]
	}
	for len(b)%4 != 0 {
		b = append(b, '=')
	}
	return string(b)
}

// decodedSize returns the decoded size of normalised base64 s.
func decodedSize(s, param string) (int64, *Error) {
	if len(s)%4 != 0 {
		return 0, BadRequest(param+" is not valid base64", param)
	}
	n := int64(len(s)) / 4 * 3
	for i := len(s) - 1; i >= 0 && i >= len(s)-2 && s[i] == '='; i-- {
		n--
	}
	return n, nil
}

// sniffBytes is how much of the decoded data checkBase64 keeps.
const sniffBytes = 512

// checkBase64 decodes normalised base64 s in small pieces, without
// holding the whole of it, and returns its first bytes for sniffing.
func checkBase64(s, param string) ([]byte, *Error) {
	dec := base64.NewDecoder(base64.StdEncoding, strings.NewReader(s))
	var buf [3 << 10]byte
	var head []byte
	for {
		n, err := dec.Read(buf[:])
		if len(head) < sniffBytes {
			head = append(head, buf[:min(n, sniffBytes-len(head))]...)
		}
		if errors.Is(err, io.EOF) {
			return head, nil
		}
		if err != nil {
			var ce base64.CorruptInputError
			if errors.As(err, &ce) {
				return nil, BadRequest(param+" is not valid base64 (at byte "+strconv.FormatInt(int64(ce), 10)+")", param)
			}
			return nil, BadRequest(param+" is not valid base64", param)
		}
	}
}

// sniffImage returns the media type of PNG, JPEG, GIF and WebP data, ""
// for anything else.
func sniffImage(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return MediaPNG
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return MediaJPEG
	case bytes.HasPrefix(b, []byte("GIF87a")), bytes.HasPrefix(b, []byte("GIF89a")):
		return MediaGIF
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return MediaWebP
	}
	return ""
}

// extTypes maps common file extensions to media types, so that bare
// base64 files get the same type on every machine (mime.TypeByExtension
// reads the system's tables).
var extTypes = map[string]string{
	".pdf": "application/pdf", ".txt": "text/plain", ".md": "text/markdown", ".csv": "text/csv",
	".json": "application/json", ".html": "text/html", ".xml": "application/xml", ".yaml": "application/yaml",
	".yml": "application/yaml", ".png": MediaPNG, ".jpg": MediaJPEG, ".jpeg": MediaJPEG, ".gif": MediaGIF,
	".webp": MediaWebP, ".zip": "application/zip",
	".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}

// typeExts is extTypes the other way round, for default file names.
var typeExts = map[string]string{
	"application/pdf": ".pdf", "text/plain": ".txt", "text/markdown": ".md", "text/csv": ".csv",
	"application/json": ".json", "text/html": ".html", "application/xml": ".xml", "application/yaml": ".yaml",
	MediaPNG: ".png", MediaJPEG: ".jpg", MediaGIF: ".gif", MediaWebP: ".webp", "application/zip": ".zip",
}

// guessMediaType names the type of a bare base64 file: by its name's
// extension, else by its first bytes.
func guessMediaType(name string, head []byte) string {
	if mt, ok := extTypes[strings.ToLower(path.Ext(name))]; ok {
		return mt
	}
	mt, _, err := mime.ParseMediaType(http.DetectContentType(head))
	if err != nil {
		return "application/octet-stream"
	}
	return mt
}

// extensionFor returns the usual extension of a media type ("" if none).
func extensionFor(mt string) string { return typeExts[mt] }

// sanitizeFilename reduces a client's file name to a safe base name: the
// part after the last slash or backslash, invalid UTF-8 and control
// characters replaced with "_", surrounding spaces and dots trimmed (no
// hidden files, no "..") and cut to 255 bytes keeping a short extension.
// It returns "" when nothing is left.
func sanitizeFilename(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || (r >= 0x80 && r < 0xa0) {
			return '_'
		}
		return r
	}, strings.ToValidUTF8(name, "_"))
	name = strings.Trim(name, " .")
	if len(name) <= maxFilenameBytes {
		return name
	}
	ext := path.Ext(name)
	if len(ext) > 16 {
		ext = ""
	}
	stem := name[:runeBoundary(name, maxFilenameBytes-len(ext))]
	return strings.TrimRight(stem, " .") + ext
}

// placeholder is the text a part stands for in [Content.Text]: its text,
// "[image]", "[file: name]" ("[file]" without a name). ok is false for
// parts that are left out (refusals, unknown types).
func (p *ContentPart) placeholder() (string, bool) {
	switch p.Type {
	case PartText:
		return p.Text, true
	case PartImageURL:
		return "[image]", true
	case PartFile:
		name := ""
		if p.File != nil {
			name = sanitizeFilename(p.File.Filename)
		}
		if name == "" {
			return "[file]", true
		}
		return "[file: " + name + "]", true
	}
	return "", false
}

// Attachments returns the images and files of the request's new user
// message: the last message, when it is a user message. A request that
// ends in tool results has none. Only a request from
// [ParseChatCompletionRequest] or [ParseRequest] has them.
func (r *ChatCompletionRequest) Attachments() Attachments {
	var a Attachments
	if len(r.Messages) == 0 || r.Messages[len(r.Messages)-1].Role != RoleUser {
		return a
	}
	for _, p := range r.Messages[len(r.Messages)-1].Content.Parts {
		if p.image != nil {
			a.Images = append(a.Images, *p.image)
		}
		if p.file != nil {
			a.Files = append(a.Files, *p.file)
		}
	}
	return a
}

// hasPrefixFold is strings.HasPrefix ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
