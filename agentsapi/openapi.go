package agentsapi

import (
	"net/http"
	"regexp"
	"strings"
)

var pathParam = regexp.MustCompile(`\{([a-z]+)(\.\.\.)?\}`)

// OpenAPI returns the OpenAPI 3 description of the routes this handler
// serves. It is built from the same table as the routes.
func OpenAPI() map[string]any {
	paths := map[string]any{}
	for _, r := range routes {
		p := pathParam.ReplaceAllString(r.Pattern, "{$1}")
		op := map[string]any{
			"summary":     r.Summary,
			"operationId": operationID(r),
			"responses":   responses(r),
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(r.Pattern, -1) {
			params = append(params, map[string]any{
				"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"},
			})
		}
		if params != nil {
			op["parameters"] = params
		}
		if r.Pattern != "/api/configs" && !strings.HasPrefix(r.Pattern, "/api/configs/") && r.Pattern != "/api/agents/openapi.json" {
			op["security"] = []any{map[string]any{"bearer": []any{}}}
		}
		if body := requestBody(r); body != nil {
			op["requestBody"] = body
		}
		item, _ := paths[p].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[p] = item
		}
		item[strings.ToLower(r.Method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":       "agcluster agent management API",
			"version":     "1",
			"description": "Launch Claude agents in isolated containers, chat with them, move files. Every session route is owner-scoped: another owner's session is a 404. The bearer token is the caller's Anthropic key (or Caddy authentication identifies the owner).",
		},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas": map[string]any{
				"Error": map[string]any{"type": "object", "properties": map[string]any{"error": map[string]any{
					"type": "object", "properties": map[string]any{
						"message": map[string]any{"type": "string"}, "type": map[string]any{"type": "string"},
						"param": map[string]any{"type": "string", "nullable": true}, "code": map[string]any{"type": "string", "nullable": true},
					}}}},
				"Session": map[string]any{"type": "object", "properties": map[string]any{
					"session_id": str(), "agent_id": str(), "config_id": str(), "provider": str(), "status": str(),
					"created_at": str(), "last_active": str(), "turns": map[string]any{"type": "integer"},
				}},
			},
		},
	}
}

func str() map[string]any { return map[string]any{"type": "string"} }

func operationID(r route) string {
	name := strings.NewReplacer("/api/", "", "/", "_", "{", "", "}", "", ".", "", "-", "_").Replace(r.Pattern)
	return strings.ToLower(r.Method) + "_" + name
}

func responses(r route) map[string]any {
	errRef := map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{
		"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
	ok := map[string]any{"description": "success"}
	switch {
	case strings.HasSuffix(r.Pattern, "/chat"):
		ok["content"] = map[string]any{"text/event-stream": map[string]any{"schema": str()}}
	case strings.HasSuffix(r.Pattern, "/archive"):
		ok["content"] = map[string]any{"application/gzip": map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}}
	case r.Method == "GET" && strings.Contains(r.Pattern, "/files/"):
		ok["content"] = map[string]any{"application/octet-stream": map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}}
	case strings.HasSuffix(r.Pattern, "/launch") || r.Pattern == "/api/agents/sessions/{id}":
		ok["content"] = map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Session"}}}
	default:
		ok["content"] = map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}
	}
	status := "200"
	if strings.HasSuffix(r.Pattern, "/launch") || (r.Method == "PUT" || (r.Method == "POST" && strings.HasSuffix(r.Pattern, "/files"))) {
		status = "201"
	}
	out := map[string]any{status: ok, "default": errRef}
	if r.Owned {
		out["404"] = map[string]any{"description": "no such session for this owner"}
	}
	return out
}

func requestBody(r route) map[string]any {
	obj := func(props map[string]any, required ...string) map[string]any {
		s := map[string]any{"type": "object", "properties": props}
		if required != nil {
			s["required"] = required
		}
		return map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": s}}}
	}
	switch {
	case r.Pattern == "/api/agents/launch":
		return obj(map[string]any{"config_id": str(), "config": map[string]any{"type": "object"}, "provider": str(),
			"mcp_env": map[string]any{"type": "object", "additionalProperties": str()}, "api_key": str()})
	case strings.HasSuffix(r.Pattern, "/chat"):
		branch := str()
		branch["description"] = "continue after the turn with this id (a result event's result.turn_id); \"\" for the beginning"
		return obj(map[string]any{"prompt": str(), "branch": branch}, "prompt")
	case r.Method == http.MethodPut:
		return map[string]any{"required": true, "content": map[string]any{"application/octet-stream": map[string]any{
			"schema": map[string]any{"type": "string", "format": "binary"}}}}
	case r.Method == http.MethodPost && strings.HasSuffix(r.Pattern, "/files"):
		return map[string]any{"required": true, "content": map[string]any{"multipart/form-data": map[string]any{
			"schema": map[string]any{"type": "object", "properties": map[string]any{
				"path": str(), "file": map[string]any{"type": "array", "items": map[string]any{"type": "string", "format": "binary"}}}}}}}
	}
	return nil
}

func (h *Handler) openAPI(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, h.doc)
}

// Route is one documented endpoint, for tests that walk the API.
type Route struct {
	// Method is the HTTP method.
	Method string
	// Pattern is the path pattern, with {id} and {path...} parameters.
	Pattern string
	// Owned tells whether the route acts on a session the caller owns.
	Owned bool
}

// Routes lists the endpoints.
func Routes() []Route {
	out := make([]Route, len(routes))
	for i, r := range routes {
		out[i] = Route{Method: r.Method, Pattern: r.Pattern, Owned: r.Owned}
	}
	return out
}
